"""`make demo`'s install: only the demo's lock, no dev tool, no daemon left listening.

Runs the Makefile's own `install-demo` and `system-deps-demo` targets on a copy of
the tree into a new virtual environment, as a fresh clone's `make demo` would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.test_lock import ROOT, applies_here, parse_lock, project

pytestmark = pytest.mark.slow

# The default ports of the daemons the test set's packages bring.
LOCK_FILES = ("requirements-demo.txt", "requirements.txt", "requirements-build.in")
DAEMON_PORTS = {"postgresql": 5432, "docker-registry": 5000}


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def demo_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("clone")
    for name in ("Makefile", "pyproject.toml", "README.md", "src", "scripts", *LOCK_FILES):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("*.egg-info"))
        else:
            shutil.copy2(src, tree / name)
    venv = tree / "venv"
    run = subprocess.run(
        ["make", "-C", str(tree), "system-deps-demo", "install-demo", f"VENV={venv}",
         f"PYTHON={sys.executable}"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return venv


def test_demo_install_is_exactly_the_demo_lock(demo_venv: Path) -> None:
    out = subprocess.run(
        [str(demo_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = {
        canonicalize_name(line.split("==")[0]): line.split("==")[1]
        for line in out.splitlines()
        if "==" in line
    }
    installed.pop("pip", None)
    assert installed.pop("powernode")
    text = (ROOT / "requirements-demo.txt").read_text()
    here = applies_here(text)  # not colorama or tzdata: Windows-only pins
    expected = {n: v for n, (v, _) in parse_lock(text).items() if n in here}
    assert installed == expected
    dev_only = {canonicalize_name(r.name) for r in project()["dev"]}
    assert not dev_only & installed.keys()


def test_demo_install_runs_the_cli(demo_venv: Path) -> None:
    run = subprocess.run(
        [str(demo_venv / "bin" / "powernode"), "version"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


@pytest.mark.parametrize("package", sorted(DAEMON_PORTS))
def test_no_daemon_the_install_brought_is_listening(demo_venv: Path, package: str) -> None:
    """The test set's packages are installed by `make test`'s system-deps; neither it
    nor the demo's leaves their services started (policy-rc.d while installing)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "install-system-deps.sh"), "test"], check=True)
    assert not listening(DAEMON_PORTS[package]), f"{package}'s daemon is listening"
