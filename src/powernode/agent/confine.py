"""Resource limits for what the agent runs (NodeScripts, init actions): detect, then apply.

Four ways, the first that works here (:func:`detect`):

``systemd``
    systemd is PID 1 (``/run/systemd/system`` exists) and ``systemd-run`` is
    installed: the command runs in a transient scope,
    ``systemd-run --scope --collect -p MemoryMax= -p TasksMax= -p CPUQuota=``.
``cgroup2``
    ``/sys/fs/cgroup`` is a cgroup v2 hierarchy (``cgroup.controllers``) whose
    root offers the ``memory`` and ``pids`` controllers: a directory
    ``/sys/fs/cgroup/powernode-exec/<id>`` with ``memory.max``, ``pids.max``
    and, where ``cpu`` is offered, ``cpu.max`` (one CPU: ``100000 100000``).
``cgroup1``
    The ``memory`` and ``pids`` controllers are cgroup v1 hierarchies (each
    mounted on its own, as ``/sys/fs/cgroup/memory`` and ``/sys/fs/cgroup/pids``),
    writable: a directory ``powernode-exec/<id>`` in each, with
    ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap
    accounting exists, so swap is no way out), ``pids.max``, and in the ``cpu``
    hierarchy where there is one ``cpu.cfs_quota_us`` = ``cpu.cfs_period_us``
    (one CPU).
``rlimit``
    Neither (no cgroup hierarchy with those controllers, or none writable —
    an unprivileged container): POSIX rlimits set in the child before exec:
    ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_CORE`` 0. ``tasks_max``
    becomes ``RLIMIT_NPROC``, which the kernel does not enforce for root
    (CAP_SYS_RESOURCE). The outcome's ``confinement_note`` and the log say
    so, and why no cgroup was used.

In the cgroup ways the child writes itself into each directory's
``cgroup.procs`` after fork and before it executes the command, so the
command and everything it forks are counted from their first instruction.
When it ends, whatever is left in the directories is killed (``cgroup.kill``
on v2; on v1 each process listed, until none is) and the directories are
removed. What the limits did is read first and reported with the outcome
(``limits_hit``): ``memory_oom_kills`` (v2 ``memory.events`` ``oom_kill``, v1
``memory.oom_control`` ``oom_kill``) and ``tasks_refused`` (``pids.events``
``max``: forks refused at ``pids.max``). A cgroup has no budget of CPU
seconds, only a rate, so ``cpu_seconds`` is ``RLIMIT_CPU`` in every way but
systemd's.

Every way also runs the child in its own session (the timeout kills its
whole process group) with no-new-privileges set (``PR_SET_NO_NEW_PRIVS``):
a setuid binary it executes gains nothing; and under the agent's seccomp
filter (agent/security.py), installed again in the child. The way used is reported with
every outcome (``confinement``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from powernode.agent.security import install_seccomp

log = logging.getLogger(__name__)

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


def cgroup1_mounts(mounts: Path = Path("/proc/self/mounts")) -> dict[str, Path]:
    """Controller → mount point of each cgroup v1 hierarchy (``memory``, ``pids``, ``cpu``)."""
    found: dict[str, Path] = {}
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or parts[2] != "cgroup":
            continue
        for option in parts[3].split(","):
            if option in ("memory", "pids", "cpu"):
                found.setdefault(option, Path(parts[1]))
    return found


def detect(cgroup_root: Path = CGROUP_ROOT) -> str:
    """``systemd``, ``cgroup2``, ``cgroup1`` or ``rlimit`` (see the module docstring)."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemd-run"):
        return "systemd"
    if _mount_type(cgroup_root) == "cgroup2":
        try:
            offered = (cgroup_root / "cgroup.controllers").read_text().split()
        except OSError:
            offered = []
        if {"memory", "pids"} <= set(offered) and os.access(cgroup_root, os.W_OK):
            return "cgroup2"
    v1 = cgroup1_mounts()
    if {"memory", "pids"} <= set(v1) and all(os.access(v1[c], os.W_OK) for c in ("memory", "pids")):
        return "cgroup1"
    return "rlimit"


def why_rlimit(cgroup_root: Path = CGROUP_ROOT) -> str:
    """Why no cgroup way applies here, for the outcome's note and the log."""
    if _mount_type(cgroup_root) == "cgroup2":
        return (
            f"{cgroup_root} is cgroup v2 but does not offer memory and pids to this "
            "process, or is not writable"
        )
    v1 = cgroup1_mounts()
    missing = [c for c in ("memory", "pids") if c not in v1]
    if missing:
        return f"no cgroup v2 at {cgroup_root} and no cgroup v1 hierarchy for {', '.join(missing)}"
    return "the cgroup v1 memory and pids hierarchies are not writable"


def no_new_privs() -> None:
    """Set no-new-privileges on the calling process (and so on what it executes)."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


_V1_FILES = {"memory": "memory.limit_in_bytes", "pids": "pids.max"}
_RLIMIT_NOTE = "tasks_max is RLIMIT_NPROC, which the kernel does not enforce for root"


@dataclass
class Confinement:
    """How one command is confined: an argv prefix, a pre-exec step, a clean-up."""

    way: str
    limits: Limits
    tag: str
    cgroup: Path | None = None  # v2: the one directory
    cgroups: dict[str, Path] = field(default_factory=dict)  # v1: controller → directory
    note: str = ""
    limits_hit: dict[str, int] = field(default_factory=dict)

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
        """In the parent, before the child starts: make the cgroup(s).

        A cgroup that cannot be made (a read-only hierarchy, a controller not
        delegated) is undone and the command runs under rlimits instead, said
        in ``note`` and the log.
        """
        try:
            if self.way == "cgroup2":
                self._prepare_v2()
            elif self.way == "cgroup1":
                self._prepare_v1()
        except OSError as e:
            what = self.way
            self.cleanup()
            self.cgroup, self.cgroups, self.limits_hit = None, {}, {}
            self.way = "rlimit"
            self.note = f"{what} not usable ({e}); rlimits instead: {_RLIMIT_NOTE}"
            log.warning("confinement of %s: %s", self.tag, self.note)
            return
        if self.way == "rlimit":
            self.note = f"{why_rlimit()}; rlimits: {_RLIMIT_NOTE}"
            log.info("confinement of %s: %s", self.tag, self.note)

    def _prepare_v2(self) -> None:
        offered = set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
        wanted = [c for c in ("memory", "pids", "cpu") if c in offered]
        enable = " ".join(f"+{c}" for c in wanted)
        with contextlib.suppress(OSError):  # enabled already, or by whoever owns the root
            (CGROUP_ROOT / "cgroup.subtree_control").write_text(enable)
        base = CGROUP_ROOT / "powernode-exec"
        base.mkdir(exist_ok=True)
        (base / "cgroup.subtree_control").write_text(enable)
        self.cgroup = base / self.tag
        self.cgroup.mkdir()
        (self.cgroup / "memory.max").write_text(str(self.limits.memory_bytes))
        (self.cgroup / "pids.max").write_text(str(self.limits.tasks_max))
        if "cpu" in wanted:
            (self.cgroup / "cpu.max").write_text(f"{CPU_PERIOD_US} {CPU_PERIOD_US}")

    def _prepare_v1(self) -> None:
        mounts = cgroup1_mounts()
        for controller in ("memory", "pids", "cpu"):
            if controller not in mounts:
                continue  # cpu: optional
            base = mounts[controller] / "powernode-exec"
            base.mkdir(exist_ok=True)
            d = base / self.tag
            d.mkdir()
            self.cgroups[controller] = d
        mem = str(self.limits.memory_bytes)
        (self.cgroups["memory"] / _V1_FILES["memory"]).write_text(mem)
        memsw = self.cgroups["memory"] / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # swap accounting: the same bound on memory + swap
            memsw.write_text(mem)
        (self.cgroups["pids"] / _V1_FILES["pids"]).write_text(str(self.limits.tasks_max))
        if "cpu" in self.cgroups:
            cpu = self.cgroups["cpu"]
            (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(CPU_PERIOD_US))

    def directories(self) -> list[Path]:
        return [self.cgroup] if self.cgroup is not None else list(self.cgroups.values())

    def preexec(self) -> Callable[[], None]:
        """What the child does before it executes the command (after fork)."""
        limits, way = self.limits, self.way
        procs = [str(d / "cgroup.procs") for d in self.directories()]

        def child() -> None:
            for path in procs:  # "0": the writing process itself
                with open(path, "w") as f:
                    f.write("0")
            if way == "rlimit":
                mem = limits.memory_bytes
                resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.tasks_max, limits.tasks_max))
            if way != "systemd":  # a cgroup limits the CPU rate, not the seconds used
                cpu = limits.cpu_seconds
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            no_new_privs()
            install_seccomp(all_threads=False)  # stacked on the agent's own, if any

        return child

    def _read_hits(self) -> None:
        if self.cgroup is not None:
            oom = _counter(self.cgroup / "memory.events", "oom_kill")
            refused = _counter(self.cgroup / "pids.events", "max")
        elif self.cgroups:
            oom = _counter(self.cgroups["memory"] / "memory.oom_control", "oom_kill")
            refused = _counter(self.cgroups["pids"] / "pids.events", "max")
        else:
            return
        self.limits_hit = {"memory_oom_kills": oom, "tasks_refused": refused}

    def cleanup(self) -> None:
        """Kill what is left in the cgroup(s), read what the limits did, remove them."""
        dirs = self.directories()
        if not dirs:
            return
        with contextlib.suppress(OSError):
            self._read_hits()
        if self.cgroup is not None:
            with contextlib.suppress(OSError):  # an older kernel has no cgroup.kill
                (self.cgroup / "cgroup.kill").write_text("1")
        for d in dirs:
            _kill_members(d)
        for d in dirs:
            for _ in range(50):  # bounded: a kill is asynchronous
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    _kill_members(d)
                    time.sleep(0.02)
            else:
                log.warning("cgroup %s still busy; left behind", d)


CPU_PERIOD_US = 100_000


def _counter(path: Path, name: str) -> int:
    """The ``name N`` line of a cgroup's key-value file (0 when absent)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in lines:
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def _kill_members(d: Path) -> None:
    """SIGKILL every process listed in ``d/cgroup.procs`` (v1 has no ``cgroup.kill``)."""
    try:
        pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def confine(limits: Limits, tag: str, way: str | None = None) -> Confinement:
    return Confinement(way or detect(), limits, tag)
