"""Build information for ``powernode-agent version``: git SHA, build date, Python.

Where it comes from, in order:

1. ``powernode/_buildinfo.json``, written at build/install time by
   ``scripts/write-buildinfo.py`` (``make buildinfo``; a wheel built after it
   carries the file as package data). ``source`` is then ``"build"``.
2. In a git checkout (the package imported from ``<checkout>/src/powernode``):
   ``git rev-parse HEAD`` and that commit's date, with ``dirty`` when the
   work tree has changes. ``source`` is ``"git"``, ``build_date`` is the
   commit's date (nothing was built).
3. Neither: SHA and date ``"unknown"``, ``source`` ``"none"``.

Never raises: a version command must answer.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from powernode import __version__

BUILDINFO_FILE = Path(__file__).with_name("_buildinfo.json")
_GIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class BuildInfo:
    version: str
    git_sha: str
    build_date: str
    python: str
    source: str  # build | git | none
    dirty: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        sha = self.git_sha + ("-dirty" if self.dirty else "")
        return (
            f"powernode-agent {self.version} (git {sha}, built {self.build_date}, "
            f"Python {self.python}, from {self.source})"
        )


def _python() -> str:
    return f"{platform.python_version()} ({platform.python_implementation()})"


def _git(checkout: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(checkout), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def from_git(checkout: Path) -> BuildInfo | None:
    """The checkout's HEAD as build info, or None when it is no git checkout."""
    if not (checkout / ".git").exists():
        return None
    sha = _git(checkout, "rev-parse", "HEAD")
    if not sha:
        return None
    date = _git(checkout, "show", "-s", "--format=%cI", "HEAD") or "unknown"
    status = _git(checkout, "status", "--porcelain", "--untracked-files=no")
    return BuildInfo(__version__, sha, date, _python(), "git", dirty=bool(status))


def write(target: Path = BUILDINFO_FILE, checkout: Path | None = None) -> BuildInfo:
    """Record the checkout's SHA and now as the build date in ``target`` (build time)."""
    found = from_git(checkout or Path(__file__).resolve().parents[2])
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    info = BuildInfo(
        __version__,
        found.git_sha if found else "unknown",
        now,
        _python(),
        "build",
        dirty=found.dirty if found else False,
    )
    doc = {"git_sha": info.git_sha, "build_date": info.build_date, "dirty": info.dirty}
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True) + "\n")
    tmp.replace(target)
    return info


def read(recorded: Path = BUILDINFO_FILE, checkout: Path | None = None) -> BuildInfo:
    """The build information (see the module docstring for the order)."""
    try:
        doc = json.loads(recorded.read_text())
        if isinstance(doc, dict) and isinstance(doc.get("git_sha"), str):
            return BuildInfo(
                __version__,
                doc["git_sha"],
                str(doc.get("build_date", "unknown")),
                _python(),
                "build",
                dirty=bool(doc.get("dirty", False)),
            )
    except (OSError, ValueError):
        pass
    found = from_git(checkout or Path(__file__).resolve().parents[2])
    if found is not None:
        return found
    return BuildInfo(__version__, "unknown", "unknown", _python(), "none")
