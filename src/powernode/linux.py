"""The Linux calls Python's ``os`` module lacks, in one place, libc loaded once.

mount(2), umount2(2), move_mount(2), syncfs(2), prctl(2) and the fs-verity
ioctls (Documentation/filesystems/fsverity.rst). Each failure raises a
:class:`~powernode.errors.SyscallError` (an ``OSError`` too) carrying the
call's name and the kernel's errno; the mount calls raise
:class:`~powernode.errors.MountCallError`, which callers also catch as
``MountError``.

libc is loaded on first use, not at import: ``--help`` and the platform,
which never mount, do not pay for it.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import platform
import struct
from pathlib import Path

from powernode.errors import MountCallError, SyscallError

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
MOVE_MOUNT_BENEATH = 0x200  # Linux >= 6.5
AT_FDCWD = -100
# move_mount(2) has the same number on every architecture with the generic table.
SYS_MOVE_MOUNT = 429
# pivot_root(2) predates it: x86_64's own table, the generic one elsewhere (arm64, riscv64).
SYS_PIVOT_ROOT = {"x86_64": 155}.get(platform.machine(), 41)

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1

# <linux/fsverity.h>: FS_IOC_ENABLE_VERITY = _IOW('f', 133, struct fsverity_enable_arg),
# FS_IOC_MEASURE_VERITY = _IOWR('f', 134, struct fsverity_digest).
FS_IOC_ENABLE_VERITY = 0x40806685
FS_IOC_MEASURE_VERITY = 0xC0046686
FS_VERITY_HASH_ALG_SHA256 = 1
_MEASURE_MAX_DIGEST = 64  # room for the largest digest (sha512)


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library this interpreter runs on (its own symbols: no search, no subprocess)."""
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.syncfs.argtypes = [ctypes.c_int]
    return lib


def mount(source: str | Path, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2)."""
    rc = libc().mount(
        os.fsencode(source), os.fsencode(target), fstype.encode(), flags, data.encode()
    )
    if rc != 0:
        raise MountCallError(
            "mount", ctypes.get_errno(), f"-t {fstype} {source} {target} (options {data or '-'})"
        )


def umount(target: Path, *, detach: bool = False) -> None:
    """umount2(2); ``detach`` is a lazy unmount (MNT_DETACH)."""
    if libc().umount2(os.fsencode(target), MNT_DETACH if detach else 0) != 0:
        raise MountCallError("umount", ctypes.get_errno(), str(target))


def move_mount(source: Path, target: Path, *, beneath: bool = False) -> None:
    """move_mount(2) of the mount at ``source`` onto (or beneath the top of) ``target``."""
    flags = MOVE_MOUNT_BENEATH if beneath else 0
    rc = libc().syscall(
        SYS_MOVE_MOUNT,
        AT_FDCWD,
        os.fsencode(source),
        AT_FDCWD,
        os.fsencode(target),
        ctypes.c_uint(flags),
    )
    if rc != 0:
        detail = f"{source} -> {target}{' (beneath)' if beneath else ''}"
        raise MountCallError("move_mount", ctypes.get_errno(), detail)


def pivot_root(new_root: Path, put_old: Path) -> None:
    """pivot_root(2): every process whose root or cwd is the old root moves to ``new_root``."""
    rc = libc().syscall(SYS_PIVOT_ROOT, os.fsencode(new_root), os.fsencode(put_old))
    if rc != 0:
        raise MountCallError("pivot_root", ctypes.get_errno(), f"{new_root} (old: {put_old})")


def syncfs(fd: int) -> None:
    """syncfs(2): flush the whole filesystem holding ``fd`` (one call for a batch of files)."""
    if libc().syncfs(fd) != 0:
        raise SyscallError("syncfs", ctypes.get_errno())


def set_pdeathsig(signal: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends ``signal`` to this process when its parent dies."""
    if libc().prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal)) != 0:
        raise SyscallError("prctl", ctypes.get_errno(), "PR_SET_PDEATHSIG")


def enable_verity(fd: int, *, block_size: int = 4096) -> None:
    """FS_IOC_ENABLE_VERITY on ``fd`` (sha256, no salt, no signature).

    ENOTTY/EOPNOTSUPP: the filesystem or kernel has no fs-verity; EEXIST: it is
    enabled already (fsverity.rst).
    """
    # struct fsverity_enable_arg: version, hash_algorithm, block_size, salt_size,
    # salt_ptr, sig_size, __reserved1, sig_ptr, __reserved2[11]
    arg = struct.pack("<IIIIQIIQ88x", 1, FS_VERITY_HASH_ALG_SHA256, block_size, 0, 0, 0, 0, 0)
    try:
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, arg)
    except OSError as e:
        raise SyscallError("ioctl", e.errno or 0, "FS_IOC_ENABLE_VERITY") from e


def measure_verity(fd: int) -> bytes:
    """FS_IOC_MEASURE_VERITY: the fs-verity digest of the file at ``fd``.

    ENODATA: fs-verity is supported but not enabled on it; ENOTTY/EOPNOTSUPP:
    not supported at all (fsverity.rst).
    """
    # struct fsverity_digest: __u16 digest_algorithm, __u16 digest_size, __u8 digest[]
    buf = bytearray(struct.pack("<HH", 0, _MEASURE_MAX_DIGEST)) + bytes(_MEASURE_MAX_DIGEST)
    try:
        fcntl.ioctl(fd, FS_IOC_MEASURE_VERITY, buf)
    except OSError as e:
        raise SyscallError("ioctl", e.errno or 0, "FS_IOC_MEASURE_VERITY") from e
    _, size = struct.unpack_from("<HH", buf)
    return bytes(buf[4 : 4 + size])
