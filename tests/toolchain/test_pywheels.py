"""Python wheels into a module's root: what is refused before pip runs, and system-base's
init files are the agent's own (powernode/agent/init/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from powernode.agent.boot import INIT_DIR
from powernode.errors import SourceTreeError
from powernode.toolchain.build import pywheels

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_BASE = ROOT / "examples" / "boot" / "system-base"


def test_a_module_without_the_build_interpreters_python_is_refused() -> None:
    mine = f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}"
    pywheels.check_python({"/usr", "/usr/lib", mine})
    with pytest.raises(SourceTreeError, match=r"has python3\.9; add python3"):
        pywheels.check_python({"/usr/lib", "/usr/lib/python3.9"})
    with pytest.raises(SourceTreeError, match=r"no python3\.X"):
        pywheels.check_python({"/usr/lib"})


def test_a_wheel_that_is_not_a_wheel_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    bogus = tmp_path / "x.tar.gz"
    bogus.write_bytes(b"x")
    dest = tmp_path / "root"
    with pytest.raises(SourceTreeError, match=r"x\.tar\.gz: not a wheel"):
        pywheels.install(tmp_path, (bogus,), dest, epoch=1)
    assert not dest.exists()


def test_entry_scripts_run_the_nodes_python(tmp_path: Path) -> None:
    di = tmp_path / "powernode-0.1.0.dist-info"
    di.mkdir()
    (di / "entry_points.txt").write_text(
        "[console_scripts]\npowernode-agent = powernode.cli.agent:main\n"
    )
    pywheels._entry_scripts(di, tmp_path / "bin")
    script = tmp_path / "bin" / "powernode-agent"
    assert script.read_text() == (
        "#!/usr/bin/python3\nimport sys\nfrom powernode.cli.agent import main\nsys.exit(main())\n"
    )
    assert script.stat().st_mode & 0o777 == 0o755


def test_system_base_ships_the_agents_init_files_and_its_locked_requirements() -> None:
    rootfs = SYSTEM_BASE / "rootfs"
    assert (rootfs / "etc" / "inittab").read_bytes() == (INIT_DIR / "inittab").read_bytes()
    for name in ("rc.sysinit", "udhcpc.script", "agent-run", "rc.shutdown"):
        shipped = rootfs / "usr" / "lib" / "powernode" / name
        assert shipped.read_bytes() == (INIT_DIR / name).read_bytes(), name
        assert shipped.stat().st_mode & 0o111
    assert (rootfs / "usr" / "sbin" / "init").readlink() == Path("/usr/bin/busybox")
    req = SYSTEM_BASE / pywheels.REQUIREMENTS_NAME
    assert req.resolve() == (ROOT / "requirements-agent.txt").resolve()
