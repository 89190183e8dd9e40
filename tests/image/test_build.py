"""`powernode image build`: byte-identical rebuilds, a complete manifest, clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from powernode.errors import ConfigError
from powernode.image.build import build
from powernode.image.cpio import chardev, regular, symlink, write_newc
from tests.image.conftest import image_cache
from tests.package_cache import EPOCH


def test_newc_is_sorted_with_parents_and_fixed_metadata() -> None:
    a = write_newc([regular("b/x", b"1"), symlink("a", "b/x"), chardev("dev/console", 5, 1)], 7)
    b = write_newc([chardev("dev/console", 5, 1), symlink("a", "b/x"), regular("b/x", b"1")], 7)
    assert a == b
    names = [
        a[i + 110 : a.index(b"\0", i + 110)] for i in range(len(a)) if a[i : i + 6] == b"070701"
    ]
    assert names == [b"a", b"b", b"b/x", b"dev", b"dev/console", b"TRAILER!!!"]


@pytest.mark.parametrize("bad", [("kernel-initrd", "mips"), ("disk", "amd64")])
def test_unknown_variant_or_arch_is_refused_and_writes_nothing(
    tmp_path: Path, bad: tuple[str, str]
) -> None:
    with pytest.raises(ConfigError, match="known"):
        build(bad[0], bad[1], tmp_path / "out", cache=tmp_path / "cache")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_rebuild_is_byte_identical(
    kernel_initrd: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    again = build(
        "kernel-initrd",
        "amd64",
        tmp_path_factory.mktemp("again") / "amd64",
        cache=image_cache(tmp_path_factory),
        epoch=EPOCH,
    )
    names = sorted(p.name for p in kernel_initrd.iterdir())
    assert (
        names
        == sorted(p.name for p in again.iterdir())
        == [
            "FSVERITY-DIGESTS",
            "SHA256SUMS",
            "build-manifest.json",
            "cmdline",
            "initramfs.cpio",
            "vmlinux",
            "vmlinuz",
        ]
    )
    for n in names:
        assert (kernel_initrd / n).read_bytes() == (again / n).read_bytes(), n
    manifest = json.loads((again / "build-manifest.json").read_text())
    pkgs = {p["name"]: p for p in manifest["packages"]}
    assert any(n.startswith("linux-image-6.12.") for n in pkgs)
    assert "busybox-static" in pkgs and all(len(p["sha256"]) == 64 for p in pkgs.values())
    assert manifest["kernel"]["config"]["CONFIG_FS_VERITY"] == "y"
    assert manifest["source_date_epoch"] == EPOCH
    assert manifest["cmdline"] == (again / "cmdline").read_text().strip()
    for line in (again / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((again / name).read_bytes()).hexdigest() == digest
    assert manifest["files"]["initramfs.cpio"]["size"] <= 30 << 20
