"""QEMU processes for LocalQemuProvider: the command line, liveness, a bounded stop.

The provider's own state (claims, disks, consoles) is in qemu_provider.py;
this module knows only processes. A VM is recognised by its pid *and* its
command line: ``/proc/<pid>/cmdline`` must carry ``-uuid <instance id>``
(which also becomes the guest's SMBIOS system UUID, the DMI identity
source), so a pid reused by another process after a crash is never taken
for the VM, and never signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from powernode.image.contract import FWCFG_SEED_ITEM, P9_SEED_TAG

# fw-cfg item names (docs/qemu-provider.md), the ones the agent's identity cascade and
# the 90powernode initramfs read. QEMU wants the "opt/" prefix for user items; the
# reverse-DNS part keeps them apart from anybody else's.
FWCFG_INSTANCE_UUID = "opt/com.powernode/instance_uuid"
FWCFG_SEED = FWCFG_SEED_ITEM

_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class VmSpec:
    """Everything one QEMU command line is made of (general: arch, machine, accel, firmware)."""

    binary: str
    instance_id: str
    machine: str
    accel: str
    memory_mb: int
    vcpus: int
    kernel: Path
    initrd: Path
    cmdline: str
    seed_file: Path
    persist_disk: Path
    console_log: Path
    firmware: Path | None = None
    # the first module set and its store, shared read-only over virtio-9p (boot_set.py)
    seed_share: Path | None = None
    extra_args: tuple[str, ...] = ()


def argv(spec: VmSpec) -> list[str]:
    """The QEMU command line: no display, no monitor, serial to a file, user networking."""
    args = [
        spec.binary,
        "-name",
        f"powernode-{spec.instance_id}",
        "-uuid",
        spec.instance_id,
        "-machine",
        spec.machine,
        "-accel",
        spec.accel,
        "-m",
        str(spec.memory_mb),
        "-smp",
        str(spec.vcpus),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        # append: a reboot (the provider starts QEMU again) keeps the earlier boots' lines
        "-chardev",
        f"file,id=console,path={spec.console_log},append=on",
        "-serial",
        "chardev:console",
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initrd),
        "-append",
        spec.cmdline,
        "-fw_cfg",
        f"name={FWCFG_INSTANCE_UUID},string={spec.instance_id}",
        "-fw_cfg",
        f"name={FWCFG_SEED},file={spec.seed_file}",
        "-drive",
        f"file={spec.persist_disk},format=raw,if=virtio,cache=unsafe",
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
    ]
    if spec.firmware is not None:
        args += ["-bios", str(spec.firmware)]
    if spec.seed_share is not None:
        args += [
            "-virtfs",
            f"local,path={spec.seed_share},mount_tag={P9_SEED_TAG},security_model=none,readonly=on",
        ]
    return [*args, *spec.extra_args]


def cmdline_of(pid: int) -> list[str] | None:
    """The arguments of a live, non-zombie process; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The state is the field after the parenthesised command name (which may hold spaces).
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X") or not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def names_instance(pid: int, instance_id: str) -> bool:
    """True when ``pid`` is alive and is the QEMU of ``instance_id``."""
    args = cmdline_of(pid)
    if args is None:
        return False
    return any(a == "-uuid" and b == instance_id for a, b in itertools.pairwise(args))


def _reap(pid: int) -> None:
    """Collect the exit status when the VM is our child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(pid: int, instance_id: str, timeout: float) -> bool:
    """Wait at most ``timeout`` seconds for the VM to go; True when it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not names_instance(pid, instance_id):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)


def stop(pid: int, instance_id: str, timeout: float) -> bool:
    """SIGTERM, ``timeout`` seconds, then SIGKILL and as long again; True when it is gone.

    Only a process that still names the instance is signalled.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not names_instance(pid, instance_id):
            _reap(pid)
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if wait_gone(pid, instance_id, timeout):
            return True
    return False
