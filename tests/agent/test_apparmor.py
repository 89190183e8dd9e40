"""A module's AppArmor profiles: found in its tree, loaded where the kernel has AppArmor,
and where it does not (this host) not loaded, each with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from powernode.agent.apparmor import SECURITYFS, available, load_profiles, profiles


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    d = root / "etc/apparmor.d"
    d.mkdir(parents=True)
    for name in ("powernode.app", "powernode.app.worker", "powernode.other", "usr.bin.x"):
        (d / name).write_text("profile x {}\n")
    return root


def test_only_the_modules_own_profiles(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert [p.name for p in profiles(root, "app")] == ["powernode.app", "powernode.app.worker"]
    assert profiles(root, "none") == []
    assert profiles(tmp_path / "empty", "app") == []


def test_without_apparmor_nothing_is_loaded_and_the_reason_given(tmp_path: Path) -> None:
    root = tree(tmp_path)
    out = load_profiles(root, "app", securityfs=tmp_path / "no-securityfs")
    assert [(o["profile"], o["loaded"]) for o in out] == [
        ("powernode.app", False), ("powernode.app.worker", False)
    ]  # fmt: skip
    assert all("the kernel has no AppArmor" in o["reason"] for o in out)
    fake = tmp_path / "securityfs"
    fake.mkdir()
    if shutil.which("apparmor_parser") is None:
        (o,) = load_profiles(root, "other", securityfs=fake)
        assert not o["loaded"] and "apparmor_parser is not installed" in o["reason"]


def test_this_host_says_what_it_lacks() -> None:
    if SECURITYFS.exists() and shutil.which("apparmor_parser"):
        pytest.skip("this host has AppArmor: profiles would be loaded")
    assert available() != ""
