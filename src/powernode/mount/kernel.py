"""mount(2) and umount2(2) through libc.

Calling the syscalls directly (not mount(8)) matters twice: EROFS mounts a
plain image file without a loop device on kernels with file-backed EROFS
(Linux ≥ 6.12, measured here in shared/notes/FACTS.md), and attach latency is
not spent forking util-linux.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from pathlib import Path

from powernode.errors import MountError

log = logging.getLogger(__name__)

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | Path, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2); raises MountError naming the call and the kernel's errno."""
    log.debug("mount -t %s -o %s %s %s (flags %#x)", fstype, data, source, target, flags)
    rc = _libc.mount(
        os.fsencode(source), os.fsencode(target), fstype.encode(), flags, data.encode()
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise MountError(
            f"mount -t {fstype} {source} {target} (options {data or '-'}): "
            f"{errno.errorcode.get(err, str(err))}: {os.strerror(err)}"
        )


def umount(target: Path, *, detach: bool = False) -> None:
    """umount2(2); ``detach`` is a lazy unmount (MNT_DETACH)."""
    log.debug("umount %s%s", target, " (lazy)" if detach else "")
    if _libc.umount2(os.fsencode(target), MNT_DETACH if detach else 0) != 0:
        err = ctypes.get_errno()
        raise MountError(
            f"umount {target}: {errno.errorcode.get(err, str(err))}: {os.strerror(err)}"
        )


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
