"""A new instance's first module set (services/boot_set.py): what the provider shares
over virtio-9p, and the refusals that leave nothing behind. The boot itself that
reads such a share is tests/image/test_boot_qemu.py (marker ``qemu``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.platform.problems import ProviderError
from powernode.platform.services.boot_set import BootModule, check, write_share
from powernode.verity.composefs.reader import Image
from tests.image.guest import make_module


def _store(tmp_path: Path) -> tuple[Path, BootModule, BootModule]:
    store = tmp_path / "store"
    base = tmp_path / "src-base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "hello").write_bytes(b"base " * 1000)
    app = tmp_path / "src-app"
    (app / "etc").mkdir(parents=True)
    (app / "etc" / "app").write_bytes(b"app " * 1000)
    mb, ma = make_module(base, "base", 10, store), make_module(app, "app", 20, store)
    return store, BootModule("base", 10, mb.digest), BootModule("app", 20, ma.digest)


def test_the_share_holds_the_set_its_images_and_their_objects(tmp_path: Path) -> None:
    store, base, app = _store(tmp_path)
    share = tmp_path / "share"
    n = write_share((base, app), store, share)
    lines = (share / "modules.set").read_text().splitlines()
    assert lines[0].startswith("# powernode module set v1")
    assert lines[1:] == [
        f"20 app {app.digest.removeprefix('sha256:')}",
        f"10 base {base.digest.removeprefix('sha256:')}",
    ]
    images = sorted(p.name for p in (share / "store" / "images").iterdir())
    assert images == sorted(f"{m.digest.removeprefix('sha256:')}.cfs" for m in (base, app))
    objects: set[str] = set()
    for img in (share / "store" / "images").iterdir():
        objects |= Image.from_bytes(img.read_bytes(), source=str(img)).objects()
    assert objects and all((share / "store" / "objects" / o).is_file() for o in objects)
    assert n == len(images) + len(objects)


def test_a_missing_image_or_object_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    store, base, app = _store(tmp_path)
    share = tmp_path / "share"
    absent = BootModule("ghost", 5, "sha256:" + "ab" * 32)
    with pytest.raises(ProviderError, match=r"lacks .*ghost \(image sha256:abab.*module pull"):
        write_share((base, absent), store, share)
    assert not share.exists()
    img = store / "images" / f"{app.digest.removeprefix('sha256:')}.cfs"
    obj = sorted(Image.from_bytes(img.read_bytes(), source="x").objects())[0]
    (store / "objects" / obj).unlink()
    with pytest.raises(ProviderError, match=r"app \(1 object\(s\)"):
        check((base, app), store)
    with pytest.raises(ProviderError, match="not a sha256 composefs digest"):
        check((BootModule("bad", 1, "sha256:../../etc"),), store)


def test_the_vm_gets_the_share_read_only_under_the_initramfs_tag(tmp_path: Path) -> None:
    from powernode.image.bootlayout import boot_layout
    from powernode.platform.services.qemu_vm import VmSpec, argv

    def spec(share: Path | None) -> VmSpec:
        f = tmp_path / "f"
        return VmSpec("qemu", "id", "q35", "tcg", 512, 1, f, f, "", f, f, f, seed_share=share)

    assert "-virtfs" not in argv(spec(None))
    args = argv(spec(tmp_path / "seed-p9"))
    virtfs = args[args.index("-virtfs") + 1]
    assert f"path={tmp_path / 'seed-p9'}," in virtfs
    assert f"mount_tag={boot_layout().p9_tag}," in virtfs and virtfs.endswith("readonly=on")
