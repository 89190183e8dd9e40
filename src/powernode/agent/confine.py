"""Resource limits for what the agent runs (NodeScripts, init actions): detect, then apply.

Three ways, the first that works here (:func:`detect`):

``systemd``
    systemd is PID 1 (``/run/systemd/system`` exists) and ``systemd-run`` is
    installed: the command runs in a transient scope,
    ``systemd-run --scope --collect -p MemoryMax= -p TasksMax= -p CPUQuota=``.
``cgroup2``
    ``/sys/fs/cgroup`` is a cgroup v2 hierarchy whose root offers the
    ``memory`` and ``pids`` controllers: a directory
    ``/sys/fs/cgroup/powernode-exec/<id>`` with ``memory.max`` and
    ``pids.max``; the child moves itself into it before it executes, and
    whatever is left in it is killed (``cgroup.kill``) and the directory
    removed when the command ends.
``rlimit``
    Neither (a cgroup v1 host, a container): POSIX rlimits set in the child
    before exec: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (CPU seconds),
    ``RLIMIT_CORE`` 0. ``tasks_max`` becomes ``RLIMIT_NPROC``, which the
    kernel does not enforce for root (CAP_SYS_RESOURCE): said in the result.

Every way also runs the child in its own session (the timeout kills its
whole process group) with no-new-privileges set (``PR_SET_NO_NEW_PRIVS``):
a setuid binary it executes gains nothing; and under the agent's seccomp
filter (agent/security.py), installed again in the child. The way used is reported with
every outcome (``confinement``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from powernode.agent.security import install_seccomp

CGROUP_ROOT = Path("/sys/fs/cgroup")
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    tasks_max: int
    cpu_seconds: int


def _mount_type(path: Path) -> str:
    """The file-system type of the last mount on ``path`` ("" if none or unreadable)."""
    kind = ""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and parts[1] == str(path):
            kind = parts[2]
    return kind


def detect(cgroup_root: Path = CGROUP_ROOT) -> str:
    """``systemd``, ``cgroup2`` or ``rlimit`` (see the module docstring)."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemd-run"):
        return "systemd"
    if _mount_type(cgroup_root) == "cgroup2":
        try:
            offered = (cgroup_root / "cgroup.controllers").read_text().split()
        except OSError:
            offered = []
        if {"memory", "pids"} <= set(offered):
            return "cgroup2"
    return "rlimit"


def no_new_privs() -> None:
    """Set no-new-privileges on the calling process (and so on what it executes)."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


@dataclass
class Confinement:
    """How one command is confined: an argv prefix, a pre-exec step, a clean-up."""

    way: str
    limits: Limits
    tag: str
    cgroup: Path | None = None
    note: str = ""

    def argv(self, command: list[str]) -> list[str]:
        if self.way != "systemd":
            return command
        quota = max(1, min(100, self.limits.cpu_seconds)) * 100  # CPUQuota in % of one CPU
        return [
            "systemd-run", "--scope", "--quiet", "--collect", f"--unit=powernode-exec-{self.tag}",
            "-p", f"MemoryMax={self.limits.memory_bytes}",
            "-p", f"TasksMax={self.limits.tasks_max}",
            "-p", f"CPUQuota={quota}%",
            *command,
        ]  # fmt: skip

    def prepare(self) -> None:
        """In the parent, before the child starts: make the cgroup."""
        if self.way == "cgroup2":
            base = CGROUP_ROOT / "powernode-exec"
            base.mkdir(exist_ok=True)
            (base / "cgroup.subtree_control").write_text("+memory +pids")
            self.cgroup = base / self.tag
            self.cgroup.mkdir()
            (self.cgroup / "memory.max").write_text(str(self.limits.memory_bytes))
            (self.cgroup / "pids.max").write_text(str(self.limits.tasks_max))
        if self.way == "rlimit":
            self.note = "tasks_max is RLIMIT_NPROC, which the kernel does not enforce for root"

    def preexec(self) -> Callable[[], None]:
        """What the child does before it executes the command (after fork)."""
        limits, way, procs = self.limits, self.way, None
        if self.cgroup is not None:
            procs = str(self.cgroup / "cgroup.procs")

        def child() -> None:
            if procs is not None:
                with open(procs, "w") as f:
                    f.write("0")
            if way == "rlimit":
                mem = limits.memory_bytes
                resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
                cpu = limits.cpu_seconds
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.tasks_max, limits.tasks_max))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            no_new_privs()
            install_seccomp(all_threads=False)  # stacked on the agent's own, if any

        return child

    def cleanup(self) -> None:
        if self.cgroup is None:
            return
        with contextlib.suppress(OSError):  # an older kernel has no cgroup.kill
            (self.cgroup / "cgroup.kill").write_text("1")
        for _ in range(50):  # bounded: the kill is asynchronous
            try:
                self.cgroup.rmdir()
                return
            except OSError:
                time.sleep(0.02)


def confine(limits: Limits, tag: str, way: str | None = None) -> Confinement:
    return Confinement(way or detect(), limits, tag)
