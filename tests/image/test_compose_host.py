"""90powernode's compose stage run on this host with real mounts (no fs-verity here: verity=off).

The same script as in the initramfs, its constants pointed at a temporary
persist tree: a good seed set composes the union (highest priority wins),
and an image that passes its digest check but does not mount makes the stage
undo every mount it made: no half-composed root.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from powernode.image.bootlayout import MODULE_DIR, BootLayout, boot_layout, render_layout_sh
from powernode.verity.fsverity import fsverity_digest
from tests.conftest import require_tool
from tests.image.guest import Module, make_module, module_set, seed_tar

pytestmark = pytest.mark.mount

STAGE = MODULE_DIR / "powernode-stage.sh"


def _mounts_under(prefix: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(prefix) or point.startswith(f"{prefix}/"):
            out.append(point)
    return out


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[BootLayout, dict[str, str], Path]]:
    require_tool("fsverity")
    persist = tmp_path / "persist"
    state = persist / "state"
    state.mkdir(parents=True)
    bl = dataclasses.replace(
        boot_layout(),
        persist_mnt=str(persist),
        state_dir=str(state),
        objects_dir=str(state / "objects"),
        images_dir=str(state / "images"),
        boot_set=str(state / "agent" / "boot.set"),
        persist_upper=str(state / "upper"),
        run_dir=str(state / "run"),
        claim_dir=str(tmp_path / "claim"),
    )
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "powernode-layout.sh").write_text(render_layout_sh(bl))
    (tmp_path / "cmdline").write_text("powernode.verity=off\n")
    env = {
        "PN_LIB_DIR": str(lib),
        "PN_SYS": str(tmp_path / "sys"),
        "PN_CMDLINE_FILE": str(tmp_path / "cmdline"),
        "NEWROOT": str(tmp_path / "newroot"),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    subprocess.run(["mount", "--bind", str(persist), str(persist)], check=True)
    try:
        yield bl, env, tmp_path
    finally:
        for point in reversed(_mounts_under(tmp_path)):
            subprocess.run(["umount", "-l", point], check=False)


def _seed(tmp: Path, set_text: str) -> None:
    item = tmp / "sys/firmware/qemu_fw_cfg/by_name/opt/com.powernode/seed.tar"
    item.mkdir(parents=True)
    (item / "raw").write_bytes(seed_tar(set_text))


def _two_modules(tmp: Path, state: Path) -> tuple[Module, Module]:
    for name, hello in (("base", "base"), ("app", "app")):
        (tmp / f"src-{name}" / "etc").mkdir(parents=True)
        (tmp / f"src-{name}" / "etc" / "hello").write_text(hello + "\n" * 80)
    (tmp / "src-base" / "etc" / "base-only").write_text("only in base\n")
    return (
        make_module(tmp / "src-base", "base", 10, state),
        make_module(tmp / "src-app", "app", 20, state),
    )


def _compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(STAGE), "compose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_good_set_composes_the_union(host: tuple[BootLayout, dict[str, str], Path]) -> None:
    bl, env, tmp = host
    base, app = _two_modules(tmp, Path(bl.state_dir))
    _seed(tmp, module_set([base, app]))
    res = _compose(env)
    assert res.returncode == 0, res.stderr
    assert "root composed on" in res.stderr and "app base (verity=off)" in res.stderr
    newroot = Path(env["NEWROOT"])
    assert (newroot / "etc" / "hello").read_text().startswith("app")
    assert (newroot / "etc" / "base-only").read_text() == "only in base\n"
    assert Path(bl.boot_set).read_text() == module_set([base, app])  # the last good set


def test_image_that_does_not_mount_undoes_every_mount(
    host: tuple[BootLayout, dict[str, str], Path],
) -> None:
    bl, env, tmp = host
    base, app = _two_modules(tmp, Path(bl.state_dir))
    junk = b"not an EROFS image\n" * 300  # its digest matches its name: it passes the check
    hex_ = fsverity_digest(junk).hex()
    (Path(bl.images_dir) / f"{hex_}.cfs").write_bytes(junk)
    broken = Module("zz-broken", 5, f"sha256:{hex_}")  # lowest priority: mounted last
    _seed(tmp, module_set([base, app, broken]))
    res = _compose(env)
    assert res.returncode != 0
    assert "composing the root failed; every mount was undone" in res.stderr, res.stderr
    assert _mounts_under(Path(env["NEWROOT"])) == []
    assert _mounts_under(Path(bl.run_dir) / f"gen-{bl.generation}") == []
    assert not Path(bl.boot_set).exists()  # not recorded as good
