"""Builders for the test trees of shared/notes/COMPOSEFS.md §16 (vectors A–E).

Each builder follows the spec's shell recipe: modes, owners and xattrs
first, mtimes last (adding entries changes a directory's mtime).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

NS = 1_000_000_000


def _touch(path: Path, sec: int, nsec: int = 0) -> None:
    ns = sec * NS + nsec
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _write(path: Path, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)
    os.chown(path, uid, gid)


def _dir(path: Path, mode: int = 0o755) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    os.chown(path, 0, 0)


def vector_a(root: Path) -> None:
    _dir(root)
    _touch(root, 0)


def vector_b(root: Path) -> None:
    _dir(root)
    _dir(root / "dir")
    _write(root / "hello.txt", b"hello\n")
    _write(root / "empty", b"")
    _write(root / "hundred", b"a" * 100)
    _write(root / "dir" / "big", b"b" * 5000)
    _write(root / "dir" / "sixtyfour", b"c" * 64)
    os.symlink("hello.txt", root / "link")
    os.chown(root / "link", 0, 0, follow_symlinks=False)
    for p in ("dir/big", "dir/sixtyfour", "dir", "hello.txt", "empty", "hundred", "link", "."):
        _touch(root / p, 1700000000)


def vector_c(root: Path) -> None:
    _dir(root)
    _write(root / "one", b"one\n")
    _write(root / "two", b"two\n")
    _write(root / "page", b"d" * 4096, mode=0o600)
    _write(root / "owner", b"x", uid=70000, gid=1000)
    # The recipe runs chmod 4755 before chown, and chown clears the setuid bit:
    # the digest in the spec is of mode 0755.
    os.chmod(root / "owner", 0o755)  # noqa: S103 - the vector says so
    os.setxattr(root / "one", "user.tag", b"blue")
    os.setxattr(root / "two", "user.tag", b"blue")
    os.setxattr(root / "two", "user.note", b"only one")
    os.setxattr(root / "page", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "page", "security.test", b"\x00\xff")
    _touch(root / "one", 1700000000, 500_000_000)
    _touch(root / "two", 1700000000)
    _touch(root / "owner", 1700000000)
    _touch(root / "page", 1800000000, 123456789)
    _touch(root, 1600000000)


def vector_d(root: Path) -> None:
    _dir(root)
    _dir(root / "sub")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o20644, os.makedev(1, 3))
    os.mknod(root / "sda1", 0o60644, os.makedev(8, 1))
    os.mknod(root / "sub" / "gone", 0o20000, os.makedev(0, 0))
    for p in ("fifo", "null", "sda1"):
        os.chmod(root / p, 0o644)
        os.chown(root / p, 0, 0)
    os.chmod(root / "sub" / "gone", 0)
    os.chown(root / "sub" / "gone", 0, 0)
    for p in ("fifo", "null", "sda1", "sub/gone", "sub", "."):
        _touch(root / p, 1000000000)


def vector_e(root: Path) -> None:
    _dir(root)
    _dir(root / "many")
    for i in range(300):
        _write(root / "many" / f"f{i:03d}", b"")
    _write(root / "many" / ("L" * 255), b"")
    os.symlink("T" * 4095, root / "longlink")
    os.chown(root / "longlink", 0, 0, follow_symlinks=False)
    for child in (root / "many").iterdir():
        _touch(child, 1700000000)
    _touch(root / "longlink", 1700000000)
    _touch(root / "many", 1700000000)
    _touch(root, 1700000000)


# name -> (builder, mkcomposefs --print-digest-only, needs devices/setuid)
VECTORS: dict[str, tuple[Callable[[Path], None], str]] = {
    "A": (vector_a, "8f589e8f57ecb88823736b0d857ddca1e1068a23e264fad164b28f7038eb3682"),
    "B": (vector_b, "6f2e426adef1422798271038acd203a965e0227a8f3d46dffde48737acf5efb4"),
    "C": (vector_c, "fa71e0b3dda1a528b63bf7234d21cfbc995acd6c7072afef342d52a0cb39a103"),
    "D": (vector_d, "78a44fdc9d332e1974776193d3d3a3d6ce57678808357d3ad9d8cb0092017519"),
    "E": (vector_e, "da63f379d312d3be281dbd02e668b07a123f525f1825ee0f97a86d5bab6a9fc4"),
}
VECTOR_D_V0 = "a97dde58122d844db0a5d09410f60210b2bc24d78e2150d647efc335f42de6ef"


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL xattr value (version 2; tag, perm, id per entry)."""
    import struct

    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def corpus_mixed(root: Path) -> None:
    """Every feature at once; its digests were produced by the real mkcomposefs 1.0.8."""
    _dir(root)
    _dir(root / "etc")
    _dir(root / "usr" / "lib" / "deep")
    _dir(root / "var" / "empty", mode=0o700)
    _write(root / "etc" / "hostname", b"node\n")
    _write(root / "etc" / "passwd", b"root:x:0:0::/root:/bin/sh\n" * 20)
    os.link(root / "etc" / "passwd", root / "etc" / "passwd-")  # two inodes in the image
    _write(root / "usr" / "lib" / "libbig.so", bytes(range(256)) * 400, mode=0o755)
    _write(root / "usr" / "lib" / "copy.so", bytes(range(256)) * 400, mode=0o755)  # same object
    for size in (63, 64, 65, 2048, 2049, 4096):
        _write(root / "usr" / "lib" / "deep" / f"s{size}", b"k" * size)
    os.symlink("../../" + "p/" * 1990 + "x", root / "usr" / "lib" / "deep" / "longlink")
    os.symlink("hostname", root / "etc" / "alias")
    for i in range(400):
        _write(root / "usr" / "lib" / f"mod{i:04d}.py", b"")
    os.mknod(root / "etc" / "gone", 0o20000, os.makedev(0, 0))
    os.mknod(root / "gone-top", 0o20000, os.makedev(0, 0))
    os.mkfifo(root / "var" / "fifo")
    os.mknod(root / "var" / "sock", 0o140755)
    os.mknod(root / "var" / "tty", 0o20620, os.makedev(4, 70000))
    _write(root / "var" / "owned", b"o" * 70, uid=100000, gid=200000)
    for name in ("passwd", "passwd-", "hostname"):
        os.setxattr(root / "etc" / name, "user.origin", b"base-files")
    os.setxattr(root / "etc", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "etc", "trusted.overlay.overlay.x", b"z")
    os.setxattr(root / "usr", "security.selinux", b"system_u:object_r:usr_t:s0")
    acl = _acl(
        (1, 6, 0xFFFFFFFF),
        (2, 6, 1000),
        (4, 4, 0xFFFFFFFF),
        (0x10, 6, 0xFFFFFFFF),
        (0x20, 4, 0xFFFFFFFF),
    )
    os.setxattr(root / "var" / "owned", "system.posix_acl_access", acl)
    times = {
        "etc/hostname": (1700000000, 1),
        "etc/passwd": (1700000000, 0),
        "usr/lib/libbig.so": (-100, 999_999_999),
        "var/owned": (4102444800, 0),
    }
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            _touch(p, *times.get(rel, (1600000000, 500)))
    _touch(root, 1600000000, 500)


# Digests from mkcomposefs 1.0.8 (git ec2573a, built from source in /tmp, not
# packaged for Debian 12) on corpus_mixed: default options and --use-epoch.
CORPUS_MIXED = "a24cb9966cab3bfdbf79317998c0d7654a2c03f47d4fedd057ea645f34203cec"
CORPUS_MIXED_EPOCH = "df284e73134345d04a14a0861dc2605f391c339f3349ce75b2e3b7ec491ed9b5"
