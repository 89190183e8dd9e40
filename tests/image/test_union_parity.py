"""The initramfs stacks the same union as the agent's union.restack for the same module set.

The 90powernode stage script's ``plan`` prints the overlay options it mounts
with; restack runs for real up to the mount(2) calls, which are recorded
instead of made (the unit layer: no images to mount). Both use the
constants rendered from :func:`powernode.image.bootlayout.boot_layout`.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from powernode.agent.modules import union
from powernode.agent.modules.integrity import VerifiedImage
from powernode.agent.modules.state import ModuleSpec
from powernode.image.bootlayout import (
    MODULE_DIR,
    BootLayout,
    boot_layout,
    render_layout_sh,
    render_module_set,
)

STAGE = MODULE_DIR / "powernode-stage.sh"
MODULES = [("zeta", 10), ("alpha", 10), ("Base", 10), ("mid", 50), ("top", 90), ("a-b.c", 50)]


def _hex(i: int) -> str:
    return f"{i:02x}" * 32


def _layout(tmp: Path) -> BootLayout:
    state = tmp / "persist" / "state"
    return dataclasses.replace(
        boot_layout(),
        state_dir=str(state),
        objects_dir=str(state / "objects"),
        images_dir=str(state / "images"),
        boot_set=str(state / "agent" / "boot.set"),
        persist_upper=str(state / "upper"),
        run_dir=str(tmp / "run"),
    )


def shell_plan(bl: BootLayout, tmp: Path, verity: str, persist_upper: bool) -> str:
    lib = tmp / "lib"
    lib.mkdir(exist_ok=True)
    (lib / "powernode-layout.sh").write_text(render_layout_sh(bl))
    specs = [ModuleSpec(n, "sha256:" + _hex(i), p) for i, (n, p) in enumerate(MODULES)]
    set_file = tmp / "modules.set"
    set_file.write_text(render_module_set(reversed(specs)))  # the file's order must not matter
    upper = bl.persist_upper if persist_upper else f"{bl.run_dir}/upper"
    res = subprocess.run(
        ["/bin/sh", str(STAGE), "plan", str(set_file), verity, upper],
        env={"PN_LIB_DIR": str(lib), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return res.stdout.strip()


def restack_options(
    bl: BootLayout, tmp: Path, verity: str, persist_upper: bool, monkeypatch: pytest.MonkeyPatch
) -> str:
    calls: list[tuple[str, str]] = []

    def fake_mount(source: object, target: Path, fstype: str, flags: int, data: str = "") -> None:
        calls.append((fstype, data))

    monkeypatch.setattr(union, "mount", fake_mount)
    monkeypatch.setattr(union, "move_mount", lambda *a, **k: None)
    monkeypatch.setattr(
        "powernode.mount.overlay.mount_image",
        lambda image, target: target.mkdir(parents=True, exist_ok=True),
    )
    layout = bl.node_layout(
        tmp / "root",
        verity=verity,  # type: ignore[arg-type]
        persist_upper=persist_upper,
    )
    layers = [
        (VerifiedImage(n, "sha256:" + _hex(i), tmp / f"{n}.cfs", -1, 0, 0), p)
        for i, (n, p) in enumerate(MODULES)
    ]
    union.restack(layout, layers, generation=bl.generation)
    overlays = [data for fstype, data in calls if fstype == "overlay"]
    assert len(overlays) == 1
    return overlays[0]


@pytest.mark.parametrize("verity", ["off", "on", "require"])
@pytest.mark.parametrize("persist_upper", [False, True])
def test_initramfs_union_equals_restack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verity: str, persist_upper: bool
) -> None:
    bl = _layout(tmp_path)
    ours = shell_plan(bl, tmp_path, verity, persist_upper)
    theirs = restack_options(bl, tmp_path, verity, persist_upper, monkeypatch)
    assert ours == theirs
    lowers = ours.split(",")[0].removeprefix("lowerdir=").split("::")[0].split(":")
    assert [Path(p).name for p in lowers] == ["top", "a-b.c", "mid", "Base", "alpha", "zeta"]
