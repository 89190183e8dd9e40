"""Every module under examples/modules/ builds with its real packages, twice, to one digest.

The first build installs into the session's package cache (which the README's
`module build` example then reuses); the second into a fresh cache, so
mmdebstrap runs again and the comparison covers the package stage too, not
only the writer. Both share the persistent .deb cache (tests/package_cache.py),
so the second install downloads nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from powernode.toolchain.build import build_module
from powernode.toolchain.localrepo import load_repo
from tests.conftest import require_tool
from tests.package_cache import EPOCH, package_cache, session_cache
from tests.toolchain.test_build import artifact_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modules"
MODULES = sorted(p for p in EXAMPLES.iterdir() if (p / "manifest.yaml").is_file())


def test_every_example_module_is_listed() -> None:
    # the parametrization below is over this list: an empty glob would test nothing
    assert {p.name for p in MODULES} >= {"chrony", "my-redis", "nginx", "rpi4-firmware"}


@pytest.mark.slow
@pytest.mark.tool
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_example_builds_twice_with_its_packages_to_one_digest(
    module: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    require_tool("mmdebstrap")
    spec = load_repo(module).manifest.package_spec
    kw = {"version": "1.0.0", "source_date_epoch": EPOCH}
    started = time.monotonic()
    a = build_module(module, tmp_path / "a", cache_dir=session_cache(tmp_path_factory), **kw)  # type: ignore[arg-type]
    first = time.monotonic() - started
    fresh = package_cache(tmp_path / "fresh-cache")
    b = build_module(module, tmp_path / "b", cache_dir=fresh, **kw)  # type: ignore[arg-type]
    second = time.monotonic() - started - first
    print(f"{module.name}: {first:.1f} s then {second:.1f} s, {len(a.packages)} packages")
    if spec:
        assert not b.cached, "the second build must install its packages again"
        installed = {p.split("=")[0] for p in a.packages}
        assert {s.split("=")[0] for s in spec} <= installed
    assert a.composefs_digest.startswith("sha256:")
    assert a.composefs_digest == b.composefs_digest
    assert artifact_bytes(tmp_path / "a") == artifact_bytes(tmp_path / "b")


def test_the_demo_runs_on_the_package_builds(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`powernode demo --packages`: the same example modules, built with their Debian
    packages from the tree cache the builds above filled (same epoch), published,
    ingested, assigned and reported without drift."""
    import os
    import subprocess
    import sys

    require_tool("mmdebstrap")
    cache = session_cache(tmp_path_factory)  # <basetemp>/xdg-cache/powernode/build
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parent.parent)}
    work = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "powernode.cli.main", "demo", "--no-agent", "--packages",
         "--dir", str(work)],
        capture_output=True, text=True, env=env, timeout=1700, check=False,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "--no-packages" not in out
    assert "drift of demo-node-1: drift false" in out
    # The published artifacts carry their packages (chrony's package list is not empty).
    listed = {
        p.parent.name: p.read_text()
        for p in (work / "artifacts").glob("*/package-list.txt")
        if p.read_text().strip()
    }
    assert any(name.startswith("chrony") for name in listed), sorted(listed)
