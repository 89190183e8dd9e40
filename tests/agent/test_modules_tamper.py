"""Tampered content is refused: nothing new is mounted and the old union keeps serving."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from powernode.agent.modules.attach import attach, restore
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.refusal import ModuleRefused
from powernode.agent.modules.state import ModuleSpec
from powernode.node.store import image_digest
from powernode.verity.fsverity import fsverity_digest
from tests.agent.test_modules_support import big, build_module, layout, mounts_under, object_of

__all__ = ["layout"]

pytestmark = pytest.mark.mount


def flip_byte(path: Path, offset: int = 10) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def serving(layout: NodeLayout) -> tuple[NodeLayout, ModuleSpec, list[str], bytes]:
    base = build_module(layout, "base", {"etc/motd": big("base")}, priority=10)
    attach(layout, base)
    return layout, base, mounts_under(layout.state), layout.state_file.path.read_bytes()


def assert_unchanged(layout: NodeLayout, mounts: list[str], state_before: bytes) -> None:
    assert (layout.root / "etc/motd").read_bytes() == big("base")
    assert not (layout.root / "opt").exists()
    assert mounts_under(layout.state) == mounts, "a mount was added or removed"
    before, after = json.loads(state_before), json.loads(layout.state_file.path.read_bytes())
    assert after["modules"] == before["modules"]
    assert after["generation"] == before["generation"]
    assert after["mounted"] == before["mounted"]


def test_flipped_byte_in_an_object_is_refused(layout: NodeLayout) -> None:
    layout, _, mounts, state = serving(layout)
    new = build_module(layout, "app", {"opt/app/bin": big("app")}, priority=20)
    obj = object_of(layout, new, "opt/app/bin")
    flip_byte(obj)
    with pytest.raises(ModuleRefused) as exc:
        attach(layout, new)
    (r,) = exc.value.refusals
    assert (r.module, r.reason, r.path) == ("app", "object-digest", str(obj))
    assert r.expected == "sha256:" + obj.parent.name + obj.name
    assert r.actual == "sha256:" + fsverity_digest(obj.read_bytes()).hex()
    assert "altered on disk" in str(exc.value)
    assert_unchanged(layout, mounts, state)
    # the refusal is recorded for `status` and shaped as an event
    saved = json.loads(layout.state_file.path.read_bytes())["refusals"]["app"]
    assert saved[0]["reason"] == "object-digest"
    assert r.event()["kind"] == "module.refused"


def test_flipped_byte_in_the_image_is_refused(layout: NodeLayout) -> None:
    layout, _, mounts, state = serving(layout)
    new = build_module(layout, "app", {"opt/app/bin": big("app")}, priority=20)
    image = layout.store.image_path(new.composefs)
    flip_byte(image, 1500)
    with pytest.raises(ModuleRefused) as exc:
        attach(layout, new)
    (r,) = exc.value.refusals
    assert (r.reason, r.expected, r.path) == ("image-digest", new.digest, str(image))
    assert_unchanged(layout, mounts, state)


def test_missing_object_is_refused(layout: NodeLayout) -> None:
    layout, _, mounts, state = serving(layout)
    new = build_module(
        layout, "app", {"opt/app/bin": big("app"), "opt/app/lib": big("lib")}, priority=20
    )
    obj = object_of(layout, new, "opt/app/lib")
    obj.unlink()
    with pytest.raises(ModuleRefused) as exc:
        attach(layout, new)
    (r,) = exc.value.refusals
    assert (r.reason, r.path) == ("object-missing", str(obj))
    assert_unchanged(layout, mounts, state)


def test_image_not_in_store_is_refused(layout: NodeLayout) -> None:
    layout, _, mounts, state = serving(layout)
    ghost = ModuleSpec("ghost", "sha256:" + "ab" * 32, 5)
    with pytest.raises(ModuleRefused, match="image-missing") as exc:
        attach(layout, ghost)
    assert exc.value.refusals[0].path == str(layout.store.image_path(ghost.composefs))
    assert_unchanged(layout, mounts, state)


def test_garbage_image_with_matching_digest_is_refused_as_corrupt(layout: NodeLayout) -> None:
    layout, _, mounts, state = serving(layout)
    data = b"\x00" * 8192
    digest = "sha256:" + fsverity_digest(data).hex()
    layout.store.put_image(data, image_digest(digest))
    with pytest.raises(ModuleRefused) as exc:
        attach(layout, ModuleSpec("junk", digest, 5))
    assert exc.value.refusals[0].reason == "image-corrupt"
    assert_unchanged(layout, mounts, state)


def test_tampering_after_a_seal_is_caught_on_the_next_restack(layout: NodeLayout) -> None:
    """Seals skip re-hashing unchanged objects; a write changes ctime and forces a re-hash."""
    layout, base, mounts, _ = serving(layout)
    flip_byte(object_of(layout, base, "etc/motd"))
    other = build_module(layout, "other", {"opt/o": big("o")}, priority=20)
    with pytest.raises(ModuleRefused) as exc:
        attach(layout, other)
    assert [(r.module, r.reason) for r in exc.value.refusals] == [("base", "object-digest")]
    assert mounts_under(layout.state) == mounts
    assert not (layout.root / "opt").exists()


def test_restore_leaves_out_a_tampered_module_and_serves_the_rest(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/motd": big("base")}, priority=10)
    app = build_module(layout, "app", {"opt/app/bin": big("app")}, priority=20)
    attach(layout, base)
    attach(layout, app)
    obj = object_of(layout, app, "opt/app/bin")
    os.chmod(obj, 0o644)
    flip_byte(obj)
    r = restore(layout)
    assert [(x.module, x.reason) for x in r.refused] == [("app", "object-digest")]
    assert (layout.root / "etc/motd").read_bytes() == big("base")
    assert not (layout.root / "opt").exists()
    doc = json.loads(layout.state_file.path.read_bytes())
    assert sorted(doc["modules"]) == ["app", "base"]  # still attached: the next sync retries
    assert doc["mounted"] == [base.digest.removeprefix("sha256:")]


def test_a_failing_restack_keeps_the_old_union(tmp_path: Path) -> None:
    from powernode.errors import MountError
    from powernode.mount.kernel import MS_RDONLY, mount
    from tests.agent.test_modules_support import cleaned

    ro = tmp_path / "ro"
    ro.mkdir()
    lay = NodeLayout(root=tmp_path / "root", state=tmp_path / "state", boot_id="b")
    with cleaned(tmp_path, lay):
        base = build_module(lay, "base", {"etc/motd": big("base")}, priority=10)
        attach(lay, base)
        mounts, state = mounts_under(lay.state), lay.state_file.path.read_bytes()
        mount("tmpfs", ro, "tmpfs", MS_RDONLY)
        broken = NodeLayout(root=lay.root, state=lay.state, upper=ro / "persist", boot_id="b")
        app = build_module(lay, "app", {"opt/app": big("app")}, priority=20)
        with pytest.raises(
            MountError, match=r"generation 2 .*Read-only file system.*keeps serving"
        ):
            attach(broken, app)
        assert_unchanged(lay, mounts, state)
        assert not (lay.run_dir / "gen-2").exists()
