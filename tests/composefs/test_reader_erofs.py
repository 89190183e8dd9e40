"""The reader on plain EROFS images made by Debian's mkfs.erofs, checked against lstat.

The corpus has every file type, sizes around block boundaries, a 255-byte
name, non-UTF-8 names, a 10,000-entry directory (which mkfs.erofs spreads
over many blocks), shared and large xattrs, hard links and devices.
"""

from __future__ import annotations

import os
import random
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powernode.errors import ImageFormatError
from powernode.run import run
from powernode.verity.composefs.reader import Entry, EntryType, Image, ReaderLimits, open_image
from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.tool

BIG_DIR = 10_000
SIZES = (0, 1, 63, 64, 65, 2047, 2048, 4095, 4096, 4097, 10_000, 100_000)


def build_corpus(root: Path) -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    root.mkdir()
    (root / "a" / "b" / "c").mkdir(parents=True)
    for size in SIZES:
        (root / f"size{size}").write_bytes(rng.randbytes(size))
    (root / "a" / "b" / "c" / "deep").write_bytes(b"deep\n")
    # mkfs.erofs 1.5 fails with ENOENT on 255-byte names; the writer tests cover 255.
    (root / ("N" * 254)).write_bytes(b"long name")
    (root / os.fsdecode(b"odd \xff\xfe\nname=1")).write_bytes(b"odd")
    os.symlink("size1", root / "short-link")
    os.symlink("T" * 4095, root / "long-link")
    os.symlink("a/b/../b/c", root / "dir-link")
    many = root / "many"
    many.mkdir()
    for i in range(BIG_DIR):
        (many / f"entry-{i:05d}").touch()
    xa = root / "xattrs"
    xa.write_bytes(b"x")
    os.setxattr(xa, "user.plain", b"value")
    os.setxattr(xa, "user.binary", bytes(range(256)))
    os.setxattr(xa, "user.big", b"B" * 1000)
    os.setxattr(xa, "trusted.overlay.opaque", b"y")
    os.setxattr(xa, "security.test", b"\x00\x01")
    for i in range(20):
        os.setxattr(xa, f"user.n{i:02d}", str(i).encode())
    for name in ("shared1", "shared2", "shared3"):
        (root / name).write_bytes(name.encode())
        os.setxattr(root / name, "user.same", b"shared value")
    os.link(root / "size1", root / "hardlink-to-size1")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o20666, os.makedev(1, 3))
    os.mknod(root / "sda1", 0o60640, os.makedev(8, 1))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
    finally:
        sock.close()
    (root / "suid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "suid", 0o4755)  # noqa: S103 - a setuid file is part of the corpus
    os.chown(root / "suid", 70000, 1234)
    for i, p in enumerate(sorted(root.rglob("*"))):
        ns = 1_600_000_000 * 10**9 + i * 1_000_123
        os.utime(p, ns=(ns, ns), follow_symlinks=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require_root()
    mkfs = require_tool("mkfs.erofs")
    base = tmp_path_factory.mktemp("erofs")
    src = base / "src"
    build_corpus(src)
    image = base / "corpus.erofs"
    run([mkfs, "--quiet", image, src])
    return src, image


def _xattrs(path: Path) -> dict[bytes, bytes]:
    return {
        os.fsencode(n): os.getxattr(path, n, follow_symlinks=False)
        for n in os.listxattr(path, follow_symlinks=False)
    }


def _check(entry: Entry, path: Path, image: Image) -> None:
    st_ = os.lstat(path)
    assert entry.mode == st_.st_mode, entry.path
    assert (entry.uid, entry.gid) == (st_.st_uid, st_.st_gid), entry.path
    assert entry.mtime == divmod(st_.st_mtime_ns, 10**9), entry.path
    assert entry.nlink == st_.st_nlink, entry.path
    assert entry.xattrs == _xattrs(path), entry.path
    if stat.S_ISREG(st_.st_mode):
        assert entry.size == st_.st_size
        assert image.read_inline(entry) == path.read_bytes(), entry.path
    elif stat.S_ISLNK(st_.st_mode):
        assert entry.symlink == os.fsencode(os.readlink(path))
        assert entry.size == st_.st_size
    elif stat.S_ISCHR(st_.st_mode) or stat.S_ISBLK(st_.st_mode):
        assert entry.rdev == st_.st_rdev


def test_walk_matches_lstat(corpus: tuple[Path, Path]) -> None:
    src, image_path = corpus
    image = open_image(image_path)
    assert not image.is_composefs
    entries = {e.path: e for e in image.walk()}
    expected = {b"/"} | {b"/" + os.fsencode(p.relative_to(src)) for p in src.rglob("*")}
    assert set(entries) == expected
    for path, entry in entries.items():
        _check(entry, src / os.fsdecode(path.lstrip(b"/")), image)
    assert image.objects() == set()


def test_multi_block_directory(corpus: tuple[Path, Path]) -> None:
    _, image_path = corpus
    image = open_image(image_path)
    many = image.lookup("/many")
    assert many.size > 30 * 4096  # about 22 bytes a dirent: many blocks
    names = [e.path for e in image.walk() if e.path.startswith(b"/many/")]
    assert names == [f"/many/entry-{i:05d}".encode() for i in range(BIG_DIR)]
    assert image.lookup("/many/entry-09999").type is EntryType.FILE


def test_hard_links_share_a_nid(corpus: tuple[Path, Path]) -> None:
    _, image_path = corpus
    entries = {e.path: e for e in open_image(image_path).walk()}
    first, second = entries[b"/hardlink-to-size1"], entries[b"/size1"]  # walk (name) order
    assert first.nid == second.nid
    assert (first.hardlink_to, second.hardlink_to) == (None, b"/hardlink-to-size1")
    assert first.nlink == second.nlink == 2


def test_superblock_checksum_is_verified(corpus: tuple[Path, Path]) -> None:
    _, image_path = corpus
    data = bytearray(image_path.read_bytes())
    data[1024 + 64] ^= 0xFF  # volume name: covered by the crc32c, read by nothing else
    with pytest.raises(ImageFormatError, match=r"superblock checksum 0x[0-9a-f]{8} at byte 1028"):
        Image.from_bytes(bytes(data))


def test_small_image_fuzz(tmp_path: Path) -> None:
    """mkfs.erofs layouts (meta_blkaddr, extended inodes, tails) under random corruption."""
    require_root()
    mkfs = require_tool("mkfs.erofs")
    src = tmp_path / "src"
    src.mkdir()
    (src / "d").mkdir()
    (src / "d" / "f").write_bytes(b"content" * 100)
    (src / "x").write_bytes(b"x")
    os.setxattr(src / "x", "user.a", b"1")
    os.symlink("d/f", src / "l")
    image = tmp_path / "small.erofs"
    run([mkfs, "--quiet", image, src])
    base = image.read_bytes()
    assert [e.path for e in Image.from_bytes(base).walk()] == [b"/", b"/d", b"/d/f", b"/l", b"/x"]
    _fuzz(base)


def _fuzz(base: bytes) -> None:
    limits = ReaderLimits(max_read_bytes=1 << 20)
    # Skip the superblock checksum so corruption reaches the inodes and dirents.
    body = bytearray(base)
    body[1024 + 8] &= ~1

    edits = st.lists(
        st.tuples(st.integers(1024 + 12, len(base) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    )

    @settings(
        max_examples=150,
        deadline=5000,  # a bug-catcher for hangs, not a timing assertion
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(edits)
    def run(edits: list[tuple[int, int]]) -> None:
        data = bytearray(body)
        for off, value in edits:
            data[off] = value
        try:
            image = Image.from_bytes(bytes(data), limits=limits)
            for entry in image.walk():
                if entry.inline:
                    image.read_inline(entry)
        except ImageFormatError:
            pass

    run()


def test_chunk_based_files_read_back(tmp_path: Path) -> None:
    """--chunksize makes CHUNK_BASED inodes with real block maps (and a hole)."""
    require_root()
    mkfs = require_tool("mkfs.erofs")
    src = tmp_path / "src"
    src.mkdir()
    contents = {
        "small": b"s" * 10,
        "blocks": random.Random(3).randbytes(3 * 4096 + 17),  # noqa: S311
        "sparse": b"\0" * 8192 + b"tail",
    }
    for name, data in contents.items():
        (src / name).write_bytes(data)
    image_path = tmp_path / "chunked.erofs"
    run([mkfs, "--quiet", "--chunksize=4096", image_path, src])
    image = open_image(image_path)
    assert image.superblock.feature_incompat & 0x4  # CHUNKED_FILE
    for name, data in contents.items():
        entry = image.lookup(name)
        assert entry.inline
        assert image.read_inline(entry) == data
