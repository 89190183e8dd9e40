"""The package trees the real-package tests share within one session, and the .deb cache.

``session_cache`` is one directory per pytest session (under its basetemp):
the example-module builds fill it, and the README's `module build` example
and the hello tests read it, so each tree is installed once per session.
Its ``debs/`` links to the user's persistent download cache
(``~/.cache/powernode/build/debs``): apt checks every .deb against the
signed Release hashes, so reusing them across sessions is safe, and a
second `make test` downloads nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.toolchain.build.packages import DEBS_DIR, default_cache_dir

# The epoch every real-package test builds with (the trees' cache key includes it)
EPOCH = 1_700_000_000


def persistent_debs() -> Path:
    debs = default_cache_dir() / DEBS_DIR
    debs.mkdir(parents=True, exist_ok=True)
    return debs


def package_cache(at: Path) -> Path:
    """A tree cache at ``at`` whose downloads go to the persistent .deb cache."""
    at.mkdir(parents=True, exist_ok=True)
    link = at / DEBS_DIR
    if not link.exists():
        link.symlink_to(persistent_debs(), target_is_directory=True)
    return at


def session_cache(factory: pytest.TempPathFactory) -> Path:
    """``<basetemp>/xdg-cache/powernode/build``: the default cache under XDG_CACHE_HOME."""
    return package_cache(factory.getbasetemp() / "xdg-cache" / "powernode" / "build")
