"""The hashed lock files (requirements*.txt) agree with pyproject.toml.

What `make` installs comes from the locks only (pip --require-hashes), so a lock
that no longer satisfies pyproject.toml would test other code than the one
declared, and a pyproject edit without `make lock` must fail here, not on the
next fresh clone.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def parse_lock(text: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for every pin of a uv/pip-tools lock."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            name = canonicalize_name(m.group(1))
            if name in pins:
                raise AssertionError(f"{name} pinned twice")
            pins[name] = (m.group(2), 0)
        elif _HASH.search(line) and name:
            version, n = pins[name]
            pins[name] = (version, n + len(_HASH.findall(line)))
    return pins


def applies_here(text: str) -> set[str]:
    """The pins of a lock whose environment marker holds for this interpreter."""
    names = set()
    for line in text.splitlines():
        m = _PIN.match(line)
        if m and (m.group(3) is None or Marker(m.group(3)).evaluate()):
            names.add(canonicalize_name(m.group(1)))
    return names


def project() -> dict[str, list[Requirement]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sets = {"base": [Requirement(r) for r in data["dependencies"]]}
    for extra, reqs in data["optional-dependencies"].items():
        sets[extra] = [Requirement(r) for r in reqs]
    build = [
        Requirement(line.split("#", 1)[0].strip())
        for line in (ROOT / "requirements-build.in").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    sets["build"] = build
    return sets


LOCKS = {
    "requirements-agent.txt": ("base", "build"),
    "requirements-demo.txt": ("base", "platform", "build"),
    "requirements.txt": ("base", "platform", "mcp", "dev", "build"),
}


def stale(lock: dict[str, tuple[str, int]], wanted: list[Requirement]) -> list[str]:
    problems = []
    for req in wanted:
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(lock[name][0], prereleases=True):
            problems.append(f"{req} is not satisfied by the locked {name}=={lock[name][0]}")
    return problems


@pytest.mark.parametrize("lock_name", sorted(LOCKS))
def test_lock_satisfies_pyproject(lock_name: str) -> None:
    sets = project()
    lock = parse_lock((ROOT / lock_name).read_text())
    wanted = [r for s in LOCKS[lock_name] for r in sets[s]]
    problems = stale(lock, wanted)
    unhashed = [n for n, (_, hashes) in lock.items() if hashes == 0]
    assert not problems, f"{lock_name} is stale, run `make lock`: {problems}"
    assert not unhashed, f"pins without a hash in {lock_name}: {unhashed}"


def test_pylock_holds_the_dev_locks_pins() -> None:
    """pylock.toml (PEP 751, what lock-aware tools read) pins exactly what requirements.txt
    pins, every file with its sha256: one resolution, two formats."""
    import tomllib

    doc = tomllib.loads((ROOT / "pylock.toml").read_text())
    assert doc["lock-version"] == "1.0"
    pins = {canonicalize_name(p["name"]): p["version"] for p in doc["packages"]}
    dev = {name: version for name, (version, _) in parse_lock(
        (ROOT / "requirements.txt").read_text()).items()}  # fmt: skip
    assert pins == dev
    for p in doc["packages"]:
        files = [*p.get("wheels", []), *([p["sdist"]] if "sdist" in p else [])]
        assert files and all(len(f["hashes"]["sha256"]) == 64 for f in files), p["name"]


def test_locks_agree_on_every_version() -> None:
    """demo and agent are resolved inside dev's pins: one package, one version."""
    dev = parse_lock((ROOT / "requirements.txt").read_text())
    for other in ("requirements-demo.txt", "requirements-agent.txt"):
        for name, (version, _) in parse_lock((ROOT / other).read_text()).items():
            assert dev[name][0] == version, f"{other} pins {name}=={version}, dev {dev[name][0]}"


def test_demo_lock_holds_no_dev_tool() -> None:
    sets = project()
    runtime = {canonicalize_name(r.name) for s in ("base", "platform", "build") for r in sets[s]}
    dev_only = {canonicalize_name(r.name) for r in sets["dev"]} - runtime
    demo = parse_lock((ROOT / "requirements-demo.txt").read_text())
    assert dev_only, "the dev extra names tools the demo does not run"
    assert not dev_only & demo.keys(), f"dev tools in the demo lock: {dev_only & demo.keys()}"


def test_lock_is_closed_under_installed_requirements() -> None:
    """Every dependency of every locked package (for this interpreter) is locked too.

    Read from the installed distributions' metadata: the test environment is
    installed from dev.txt, so a pin that pulls in something unlocked shows here.
    """
    lock = parse_lock((ROOT / "requirements.txt").read_text())
    env = default_environment()
    missing = []
    for name in lock:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a platform-specific pin (colorama on Windows) not installed here
        for spec in requires:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            if canonicalize_name(req.name) not in lock:
                missing.append(f"{name} needs {req}")
    assert not missing, f"requirements.txt is not closed, run `make lock`: {missing}"


def test_a_changed_pyproject_makes_the_lock_stale() -> None:
    """The check above can fail: a bound the lock does not satisfy is reported."""
    lock = parse_lock((ROOT / "requirements.txt").read_text())
    version = lock["cryptography"][0]
    problems = stale(lock, [Requirement(f"cryptography>{version}"), Requirement("not-a-pkg")])
    assert problems == [
        f"cryptography>{version} is not satisfied by the locked cryptography=={version}",
        "not-a-pkg is not in the lock",
    ]
