"""mount(2) and umount2(2), logged (the calls themselves are in ``powernode.linux``).

Calling the syscalls directly (not mount(8)) matters twice: EROFS mounts a
plain image file without a loop device on kernels with file-backed EROFS
(Linux ≥ 6.12, measured here in shared/notes/FACTS.md), and attach latency is
not spent forking util-linux.
"""

from __future__ import annotations

import logging
from pathlib import Path

from powernode import linux
from powernode.linux import MNT_DETACH, MS_BIND, MS_MOVE, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REC

__all__ = [
    "MNT_DETACH",
    "MS_BIND",
    "MS_MOVE",
    "MS_NODEV",
    "MS_NOSUID",
    "MS_RDONLY",
    "MS_REC",
    "is_mountpoint",
    "mount",
    "mountpoints",
    "umount",
]

log = logging.getLogger(__name__)


def mount(source: str | Path, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2); raises MountCallError (a MountError) naming the call and the kernel's errno."""
    log.debug("mount -t %s -o %s %s %s (flags %#x)", fstype, data, source, target, flags)
    linux.mount(source, target, fstype, flags, data)


def umount(target: Path, *, detach: bool = False) -> None:
    """umount2(2); ``detach`` is a lazy unmount (MNT_DETACH)."""
    log.debug("umount %s%s", target, " (lazy)" if detach else "")
    linux.umount(target, detach=detach)


def mountpoints(proc_mounts: Path = Path("/proc/self/mounts")) -> list[str]:
    """Mount points in mount order, octal escapes (``\\040``) decoded."""
    out = []
    for line in proc_mounts.read_text().splitlines():
        fields = line.split(" ")
        if len(fields) >= 2:
            out.append(_unescape(fields[1]))
    return out


def is_mountpoint(path: Path) -> bool:
    return str(path) in mountpoints()


def _unescape(field: str) -> str:
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
