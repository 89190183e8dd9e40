"""A deterministic cpio "newc" archive writer (the initramfs format, Linux
Documentation/driver-api/early-userspace/buffer-format.rst).

Entries are written sorted by path, parents first, with fixed owners (0:0),
one mtime (SOURCE_DATE_EPOCH), inode numbers counted from 1 in that order and
no hard links, so the same entries give the same bytes on every machine.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from powernode.errors import ConfigError

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    """One member: ``path`` relative (no leading '/'), ``mode`` with its file type bits."""

    path: str
    mode: int
    data: bytes = b""  # file content, or the symlink target
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node

    def __post_init__(self) -> None:
        p = PurePosixPath(self.path)
        if p.is_absolute() or ".." in p.parts or not self.path or str(p) != self.path:
            raise ConfigError(f"cpio member {self.path!r}: must be a clean relative path")
        if stat.S_IFMT(self.mode) not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR):
            raise ConfigError(f"cpio member {self.path}: unsupported file type {self.mode:o}")


def regular(path: str, data: bytes, mode: int = 0o644) -> CpioEntry:
    return CpioEntry(path, stat.S_IFREG | mode, data)


def directory(path: str, mode: int = 0o755) -> CpioEntry:
    return CpioEntry(path, stat.S_IFDIR | mode)


def symlink(path: str, target: str) -> CpioEntry:
    return CpioEntry(path, stat.S_IFLNK | 0o777, target.encode())


def chardev(path: str, major: int, minor: int, mode: int = 0o600) -> CpioEntry:
    return CpioEntry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(  # noqa: PLR0917 - the newc header's fields, in order
    ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], name: bytes
) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    head = _MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + _pad4(len(head))


def with_parents(entries: Iterable[CpioEntry]) -> list[CpioEntry]:
    """``entries`` plus a 0755 directory for every missing parent, sorted by path parts."""
    by_path: dict[str, CpioEntry] = {}
    for e in entries:
        if e.path in by_path and by_path[e.path] != e:
            raise ConfigError(f"cpio member {e.path}: given twice with different content")
        by_path[e.path] = e
    for e in list(by_path.values()):
        for parent in PurePosixPath(e.path).parents:
            if str(parent) != "." and str(parent) not in by_path:
                by_path[str(parent)] = directory(str(parent))
    return sorted(by_path.values(), key=lambda e: PurePosixPath(e.path).parts)


def write_newc(entries: Iterable[CpioEntry], mtime: int) -> bytes:
    """The archive's bytes: ``entries`` (and their parent directories), then the trailer."""
    out = bytearray()
    for ino, e in enumerate(with_parents(entries), 1):
        is_dir = stat.S_ISDIR(e.mode)
        size = 0 if is_dir or stat.S_ISCHR(e.mode) else len(e.data)
        out += _header(ino, e.mode, 2 if is_dir else 1, mtime, size, e.rdev, e.path.encode())
        if size:
            out += e.data + _pad4(size)
    out += _header(0, 0, 1, 0, 0, (0, 0), _TRAILER.encode())
    return bytes(out)
