"""``exec`` confined in real cgroups: this host's cgroup v1 hierarchies (memory, pids, cpu).

A script placed in the cgroup before it executes (its /proc/self/cgroup names it, and the
CPU quota is the one CPU set); one forking past ``tasks_max`` is refused the forks and the
outcome counts them; one allocating past ``memory_bytes`` is OOM-killed and the outcome
says so; the cgroup directories are gone afterwards; a hierarchy that cannot be written
falls back to rlimits and says so. The v2 path (``cgroup2``) needs a v2 host: not here.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from powernode.agent import confine
from powernode.agent.confine import Limits, cgroup1_mounts
from powernode.agent.nodescripts import run_script, verdict
from powernode.agent.tasks import TaskError
from powernode.signing.nodescript import NodeScript, parse
from tests.agent.test_exec import KEY, PUB

pytestmark = [pytest.mark.cgroup]
V1 = "cgroup1"


@pytest.fixture(autouse=True)
def cgroup_v1() -> dict[str, Path]:
    """This host's v1 hierarchies; the tests ask for the v1 way even where systemd would win."""
    mounts = cgroup1_mounts()
    if not {"memory", "pids"} <= set(mounts) or not all(
        os.access(mounts[c], os.W_OK) for c in ("memory", "pids")
    ):
        pytest.skip(f"needs writable cgroup v1 memory and pids hierarchies (found: {mounts})")
    return mounts


def _named(body: str, **kw: object) -> tuple[str, NodeScript]:
    """A signed script with a name of its own (its cgroups are found by it)."""
    name = f"cg-{secrets.token_hex(4)}"
    return name, parse({"name": name, "version": 1, "script": body, **kw}).signed(KEY)


def _left(mounts: dict[str, Path], name: str) -> list[Path]:
    """Directories of a script named ``name`` still under powernode-exec/ in any hierarchy."""
    found = []
    for m in mounts.values():
        base = m / "powernode-exec"
        if base.is_dir():
            found += [d for d in base.iterdir() if d.name.startswith(f"{name}-")]
    return found


def test_the_script_runs_inside_its_cgroups_which_are_removed_after(
    cgroup_v1: dict[str, Path],
) -> None:
    body = (
        'cpu=$(grep -E "^[0-9]+:cpu:" /proc/self/cgroup | cut -d: -f3)\n'
        "grep -E ':(memory|pids|cpu):' /proc/self/cgroup | cut -d: -f2,3\n"
        'cat "/sys/fs/cgroup/cpu$cpu/cpu.cfs_quota_us"\n'
    )
    name, doc = _named(body, limits={"memory_bytes": 64 << 20, "tasks_max": 16})
    result = run_script(doc, [PUB], way=V1)
    assert result["exit_code"] == 0, result
    assert result["confinement"] == "cgroup1" and result["confinement_note"] == ""
    lines = str(result["stdout"]).splitlines()
    placed = dict(line.split(":", 1) for line in lines[:-1])
    for controller in ("memory", "pids", "cpu"):
        assert placed[controller].startswith(f"/powernode-exec/{name}-"), placed
    assert lines[-1] == str(confine.CPU_PERIOD_US)  # one CPU
    assert result["limits_hit"] == {"memory_oom_kills": 0, "tasks_refused": 0}
    assert _left(cgroup_v1, name) == []


def test_forking_past_tasks_max_is_refused_and_reported(cgroup_v1: dict[str, Path]) -> None:
    body = "for i in $(seq 12); do sleep 30 & done; wait\n"
    name, doc = _named(body, limits={"tasks_max": 4}, timeout_seconds=60)
    result = run_script(doc, [PUB], way=V1)
    assert result["exit_code"] != 0 and not result["timed_out"], result
    assert "fork" in str(result["stderr"]).lower()
    hit = result["limits_hit"]
    assert isinstance(hit, dict) and int(hit["tasks_refused"]) >= 1
    with pytest.raises(TaskError, match=r"fork\(s\) refused at its tasks limit"):
        verdict(result)
    # The sleeps it did start were killed with the cgroup, which is gone.
    assert _left(cgroup_v1, name) == []


def test_allocating_past_the_memory_limit_is_killed_and_reported(
    cgroup_v1: dict[str, Path],
) -> None:
    body = 'exec python3 -c "b = bytearray(256 << 20); print(len(b))"\n'
    name, doc = _named(body, limits={"memory_bytes": 48 << 20})
    result = run_script(doc, [PUB], way=V1)
    assert result["exit_code"] == -9 and result["stdout"] == "", result  # SIGKILL
    hit = result["limits_hit"]
    assert isinstance(hit, dict) and int(hit["memory_oom_kills"]) >= 1
    with pytest.raises(TaskError, match=r"killed by its memory limit: \d+ OOM kill"):
        verdict(result)
    assert _left(cgroup_v1, name) == []
    # Under the limit, the same allocation succeeds.
    body = 'exec python3 -c "b = bytearray(8 << 20); print(len(b))"\n'
    _, doc = _named(body, limits={"memory_bytes": 128 << 20})
    ok = run_script(doc, [PUB], way=V1)
    assert ok["exit_code"] == 0 and ok["stdout"] == f"{8 << 20}\n"


def test_a_hierarchy_that_cannot_be_written_falls_back_to_rlimits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # /proc refuses a new directory (the kernel's answer, not a fake's).
    monkeypatch.setattr(
        confine, "cgroup1_mounts", lambda: {"memory": Path("/proc"), "pids": Path("/proc")}
    )
    how = confine.confine(Limits(64 << 20, 8, 10), f"cg-{secrets.token_hex(4)}", "cgroup1")
    how.prepare()
    assert how.way == "rlimit" and how.directories() == []
    assert how.note.startswith("cgroup1 not usable (")
    assert "rlimits instead" in how.note and "RLIMIT_NPROC" in how.note
    # A script run that way says it in its outcome.
    _, doc = _named("ulimit -v\n", limits={"memory_bytes": 64 << 20})
    result = run_script(doc, [PUB], way="cgroup1")
    assert result["confinement"] == "rlimit" and result["limits_hit"] == {}
    assert "cgroup1 not usable" in str(result["confinement_note"])
    assert result["stdout"] == f"{(64 << 20) // 1024}\n"
