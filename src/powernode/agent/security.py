"""The agent confines itself (seed 000's ``security`` package): capabilities, seccomp, NNP.

:func:`harden` runs once at ``service`` start, before any thread is started:

1. **no-new-privileges** (``PR_SET_NO_NEW_PRIVS``): nothing the agent executes
   gains privileges through setuid/setgid bits or file capabilities.
2. **Capabilities**: every capability not in :data:`KEEP` is dropped from the
   bounding set (so no child can regain it) and from the effective,
   permitted, inheritable and ambient sets. What it keeps, and why:

   ``CAP_SYS_ADMIN``
       mount, unmount and move the composefs/overlay union (``mount``,
       ``move_mount``, ``fsconfig``).
   ``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``
       read module trees and objects of any owner and mode when verifying,
       and clean overlay work directories (mode 000) off the upper layer.
   ``CAP_CHOWN``, ``CAP_FOWNER``, ``CAP_FSETID``, ``CAP_SETFCAP``, ``CAP_MKNOD``
       overlayfs acts with the *mounter's* credentials: copy-up chowns the
       copy to the original owner and keeps set-id bits and file
       capabilities; a removal writes a whiteout, a 0/0 character device.
   ``CAP_KILL``
       end a NodeScript's or init action's process group at its timeout or
       at the drain, whatever user its processes switched to.

   Dropped, among others: ``CAP_NET_ADMIN``, ``CAP_NET_RAW``, ``CAP_SYS_MODULE``,
   ``CAP_SYS_PTRACE``, ``CAP_SYS_BOOT``, ``CAP_SYS_RAWIO``, ``CAP_SETUID``,
   ``CAP_SETGID``, ``CAP_SYS_TIME``, ``CAP_BPF``. NodeScripts and init actions
   inherit the reduced bounding set: a script cannot load a kernel module or
   reconfigure the network (run that as a module's unit instead).
3. **seccomp** (mode 2, filter): a hand-built classic BPF program (below,
   ~40 instructions) answers ``EPERM`` to syscalls the agent never makes and
   an attacker wants: loading kernels and modules, reboot, swap, ptrace and
   cross-process memory access, ``bpf``, ``perf_event_open``,
   ``userfaultfd``, ``open_by_handle_at``, the kernel keyring, ``acct``,
   setting the clock, port I/O; and every syscall of another ABI (x32, i386)
   than the agent's own. Installed on every thread (``SECCOMP_FILTER_FLAG_TSYNC``)
   and inherited across fork and exec: what the agent runs is filtered
   too, and the runner stacks the same filter again in each child
   (:func:`install_seccomp`) so a script run by hand is filtered as well.

libseccomp's Python bindings are Debian's ``python3-seccomp`` (not on PyPI
in a form the locks can pin), so the filter is built here; it is small and
the test reads the mode back from ``/proc/<pid>/status``. Architectures:
x86_64 and aarch64; elsewhere the filter is skipped and :func:`harden` says so.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
_CAP_VERSION_3 = 0x20080522

CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_TIME": 25,
    "CAP_MKNOD": 27, "CAP_SETFCAP": 31, "CAP_BPF": 39,
}  # fmt: skip
KEEP: dict[str, str] = {
    "CAP_SYS_ADMIN": "mount, unmount and move the module union",
    "CAP_DAC_OVERRIDE": "verify module files of any mode; clean overlay work dirs",
    "CAP_DAC_READ_SEARCH": "walk module trees of any owner",
    "CAP_CHOWN": "overlayfs copy-up with the mounter's credentials",
    "CAP_FOWNER": "overlayfs copy-up keeps times and modes",
    "CAP_FSETID": "overlayfs copy-up keeps set-id bits",
    "CAP_SETFCAP": "overlayfs copy-up keeps file capabilities",
    "CAP_MKNOD": "overlayfs whiteouts (0/0 character devices)",
    "CAP_KILL": "end a NodeScript's process group at its timeout",
}

# Denied syscalls by name -> number, per architecture (asm/unistd_64.h; asm-generic).
_DENY = {
    "x86_64": {
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "open_by_handle_at": 304,
        "add_key": 248, "request_key": 249, "keyctl": 250, "acct": 163,
        "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "iopl": 172, "ioperm": 173,
    },
    "aarch64": {
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "open_by_handle_at": 265,
        "add_key": 217, "request_key": 218, "keyctl": 219, "acct": 89,
        "settimeofday": 170, "clock_settime": 112, "adjtimex": 171,
    },
}  # fmt: skip
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SECCOMP_NR = {"x86_64": 317, "aarch64": 277}
_X32_BIT = 0x40000000

# classic BPF
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EPERM = 1


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(arch: str) -> bytes:
    """The filter for ``arch`` as ``struct sock_filter`` bytes (see the module docstring)."""
    deny = sorted(_DENY[arch].values())
    errno = _RET_ERRNO | _EPERM
    prog = [_insn(_LD_W_ABS, 0, 0, 4)]  # seccomp_data.arch
    prog.append(_insn(_JEQ_K, 1, 0, _AUDIT_ARCH[arch]))
    prog.append(_insn(_RET_K, 0, 0, errno))  # another ABI (i386 on x86_64): refused
    prog.append(_insn(_LD_W_ABS, 0, 0, 0))  # seccomp_data.nr
    if arch == "x86_64":
        prog.append(_insn(_JGE_K, 0, 1, _X32_BIT))
        prog.append(_insn(_RET_K, 0, 0, errno))  # the x32 ABI
    for i, nr in enumerate(deny):
        # jump to the final ERRNO return: past the remaining tests and the ALLOW
        prog.append(_insn(_JEQ_K, len(deny) - i, 0, nr))
    prog.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    prog.append(_insn(_RET_K, 0, 0, errno))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def no_new_privs() -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def install_seccomp(*, all_threads: bool = True) -> str:
    """Install the filter on this process (needs no-new-privileges or CAP_SYS_ADMIN)."""
    arch = platform.machine()
    if arch not in _DENY:
        return f"skipped: no syscall table for {arch}"
    raw = seccomp_program(arch)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p).value)
    flags = SECCOMP_FILTER_FLAG_TSYNC if all_threads else 0
    rc = _libc.syscall(_SECCOMP_NR[arch], SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))
    _check(0 if rc == 0 else -1, "seccomp(SECCOMP_SET_MODE_FILTER)")
    return f"filter: {len(_DENY[arch])} syscalls refused ({arch})"


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def drop_capabilities(keep: set[str]) -> list[int]:
    """Drop every capability but ``keep`` from all sets; the numbers kept."""
    kept = sorted(CAPS[name] for name in keep)
    setpcap = CAPS["CAP_SETPCAP"]
    for cap in range(_last_cap() + 1):
        if cap not in kept and cap != setpcap:
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"PR_CAPBSET_DROP {cap}")
    _check(_libc.prctl(PR_CAPBSET_DROP, setpcap, 0, 0, 0), "PR_CAPBSET_DROP CAP_SETPCAP")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    mask = sum(1 << c for c in kept)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = word
        data[i].permitted = word
        data[i].inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    return kept


@dataclass
class Hardening:
    """What :func:`harden` did, for the log and ``introspect``."""

    no_new_privs: bool = False
    capabilities: str = "unchanged"
    seccomp: str = "not installed"
    notes: list[str] = field(default_factory=list)


def harden() -> Hardening:
    """no-new-privileges, capabilities, seccomp; a step that cannot be taken is said, not fatal."""
    done = Hardening()
    try:
        no_new_privs()
        done.no_new_privs = True
    except OSError as e:
        done.notes.append(str(e))
    try:
        kept = drop_capabilities(set(KEEP))
        done.capabilities = f"kept {len(kept)}: {', '.join(sorted(KEEP))}"
    except OSError as e:  # not root, or no CAP_SETPCAP: the sets stay as they were
        done.notes.append(f"capabilities not dropped: {e}")
    if done.no_new_privs:
        try:
            done.seccomp = install_seccomp()
        except OSError as e:
            done.notes.append(f"seccomp: {e}")
    log.info(
        "confined: no_new_privs=%s, capabilities %s, seccomp %s%s",
        done.no_new_privs,
        done.capabilities,
        done.seccomp,
        "".join(f"; {n}" for n in done.notes),
    )
    return done
