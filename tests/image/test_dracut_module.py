"""90powernode as files: strict POSIX sh, constants rendered from one source, a readable setup."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from powernode.image.bootlayout import MODULE_DIR, render_layout_sh
from powernode.image.initramfs import read_module_setup

STAGE = MODULE_DIR / "powernode-stage.sh"


def test_layout_file_is_rendered_from_the_python_source() -> None:
    assert (MODULE_DIR / "powernode-layout.sh").read_text() == render_layout_sh(), (
        "regenerate: python -c 'from powernode.image.bootlayout import *; "
        '(MODULE_DIR/"powernode-layout.sh").write_text(render_layout_sh())\''
    )


def test_scripts_are_strict_posix_sh() -> None:
    for script in sorted(MODULE_DIR.glob("*.sh")):
        if script.name == "module-setup.sh":  # dracut sources it with bash
            continue
        subprocess.run(["/bin/sh", "-n", str(script)], check=True)
        if script.name == "powernode-stage.sh":
            assert "\nset -eu\n" in script.read_text()
    if os.path.exists("/bin/busybox"):
        subprocess.run(["/bin/busybox", "sh", "-n", str(STAGE)], check=True)


def test_module_setup_lists_hooks_files_and_modules() -> None:
    req = read_module_setup()
    assert [(s, p, Path(f).name) for s, p, f in req.hooks] == [
        ("cmdline", 20, "hook-identity.sh"),
        ("mount", 50, "hook-compose.sh"),
        ("pre-pivot", 50, "hook-seed.sh"),
    ]
    for src, dest, _ in req.files:
        assert Path(src).is_file() and dest.startswith("/usr/lib/powernode/initrd/")
    assert {"erofs", "overlay", "ext4", "qemu_fw_cfg"} <= set(req.kernel_modules)
    assert "fsverity" in req.programs and "switch_root" in req.programs


def _identity(
    tmp: Path,
    cmdline: str,
    fwcfg: str | None = None,
    dmi: str | None = None,
    local: str | None = None,
) -> tuple[str, str]:
    sys_dir = tmp / "sys"
    if fwcfg is not None:
        item = sys_dir / "firmware/qemu_fw_cfg/by_name/opt/com.powernode/instance_uuid"
        item.mkdir(parents=True)
        (item / "raw").write_text(fwcfg)
    if dmi is not None:
        (sys_dir / "class/dmi/id").mkdir(parents=True)
        (sys_dir / "class/dmi/id/product_uuid").write_text(dmi + "\n")
    lib = tmp / "lib"
    lib.mkdir()
    layout = (
        render_layout_sh()
        .replace(
            "PN_IDENTITY_FILE='/persist/var/lib/powernode/identity.cfg'",
            f"PN_IDENTITY_FILE='{tmp}/identity.cfg'",
        )
        .replace("PN_CLAIM_DIR='/run/powernode'", f"PN_CLAIM_DIR='{tmp}/run'")
    )
    (lib / "powernode-layout.sh").write_text(layout)
    if local is not None:
        (tmp / "identity.cfg").write_text(local)
    (tmp / "cmdline").write_text(cmdline + "\n")
    res = subprocess.run(
        ["/bin/sh", str(STAGE), "identity"],
        env={
            "PN_LIB_DIR": str(lib),
            "PN_SYS": str(sys_dir),
            "PN_CMDLINE_FILE": str(tmp / "cmdline"),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return (tmp / "run" / "identity").read_text(), res.stderr


ID1 = "6f1c5a52-3b7e-4d3f-9c1e-2a4b5c6d7e8f"
ID2 = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"


@pytest.mark.parametrize(
    ("kwargs", "winner", "source"),
    [
        ({"cmdline": f"quiet powernode.id={ID1}", "fwcfg": ID2}, ID1, "cmdline"),
        ({"cmdline": "quiet", "fwcfg": ID2.upper() + "\0", "dmi": ID1}, ID2, "fwcfg"),
        (
            {
                "cmdline": "powernode.id=nope",
                "fwcfg": "00000000-0000-0000-0000-000000000000",
                "dmi": ID1,
            },
            ID1,
            "dmi",
        ),
        (
            {
                "cmdline": "",
                "dmi": "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "local": f"# x\ninstance_id = {ID2}\n",
            },
            ID2,
            "local",
        ),
    ],
)
def test_identity_cascade_order_and_winner(
    tmp_path: Path, kwargs: dict[str, str], winner: str, source: str
) -> None:
    got, log = _identity(tmp_path, **kwargs)
    assert got == f"instance_id={winner}\nsource={source}\n"
    assert f"powernode: identity {winner} from {source}" in log


def test_identity_none_says_so(tmp_path: Path) -> None:
    got, log = _identity(tmp_path, "quiet")
    assert got == "instance_id=\nsource=none\n"
    assert "no source gave one" in log
    assert "identity: aws: skipped" in log  # the cloud sources, in the agent's order
