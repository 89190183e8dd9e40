"""Shared fixtures and marker policy.

Privileged and slow tests carry markers (see pyproject.toml). Outside CI a
test whose prerequisite is missing is skipped and says why; under CI
(``CI=true``) a missing prerequisite is a failure, because `make test`
installs everything and a silent skip would hide a broken install step.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("needs root for real mounts")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} is not installed (scripts/install-system-deps.sh installs it)")
        raise AssertionError("unreachable")
    return path


@pytest.fixture
def root_required() -> None:
    require_root()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("mount") or item.get_closest_marker("cgroup"):
            item.fixturenames.insert(0, "root_required")
