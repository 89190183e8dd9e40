"""The agent confines itself: capabilities, seccomp mode and no-new-privileges read back
from ``/proc/<pid>/status`` of the running ``powernode-agent service`` and of a NodeScript
it runs; the filter refuses what it lists and lets the rest through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from powernode.agent.security import CAPS, KEEP, seccomp_program
from powernode.signing import generate_private_key, public_key_pem
from powernode.signing.nodescript import parse
from tests.agent.agentproc import AgentProcess, wait_for
from tests.agent.nodecmds import Operator, enrolled
from tests.conftest import require_root
from tests.platform.nodeapi.realplatform import real_platform

KEPT_MASK = sum(1 << CAPS[name] for name in KEEP)


def status(pid: int | str = "self") -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


CHILD = """
import ctypes, errno, json, os
from powernode.agent.security import harden
h = harden()
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    rc = libc.syscall(nr, *args)
    return 0 if rc == 0 else ctypes.get_errno()
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
with open(os.environ["OUT"] + "/written", "w") as f:
    f.write("still works")
print(json.dumps({
    "status": {k: v.strip() for k, v in status.items()},
    "ptrace": call(101, 0x4206, 1, 0, 0),          # PTRACE_SEIZE pid 1
    "init_module": call(175, 0, 0, 0),
    "getpid_ok": libc.syscall(39) == os.getpid(),
    "notes": h.notes,
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_harden_drops_capabilities_and_filters_syscalls(tmp_path: Path) -> None:
    require_root()
    import os
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the syscall numbers below are x86_64's")
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          env=env, timeout=60, check=True)  # fmt: skip
    doc = json.loads(proc.stdout)
    st = doc["status"]
    assert doc["notes"] == []
    assert int(st["CapEff"], 16) == KEPT_MASK
    assert int(st["CapPrm"], 16) == KEPT_MASK
    assert int(st["CapBnd"], 16) == KEPT_MASK  # nothing a child could regain
    assert int(st["CapAmb"], 16) == 0
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    assert doc["ptrace"] == 1 and doc["init_module"] == 1  # EPERM from the filter
    assert doc["getpid_ok"]
    assert (tmp_path / "written").read_text() == "still works"


def test_filter_program_shape() -> None:
    for arch in ("x86_64", "aarch64"):
        prog = seccomp_program(arch)
        assert len(prog) % 8 == 0 and len(prog) // 8 < 64
    # the last two instructions: allow, then the EPERM every match jumps to
    prog = seccomp_program("x86_64")
    assert prog[-16:-8][4:] == (0x7FFF0000).to_bytes(4, "little")
    assert prog[-8:][4:] == (0x00050001).to_bytes(4, "little")


@pytest.mark.slow
def test_running_agent_and_what_it_runs_are_confined(tmp_path: Path) -> None:
    require_root()
    key = generate_private_key()
    pub = tmp_path / "keys.pem"
    pub.write_bytes(public_key_pem(key))
    with real_platform(tmp_path) as platform:
        node = enrolled(tmp_path, platform, "confined", nodescript_keys_file=pub)
        agent = AgentProcess(node.config, tmp_path / "agent.log")
        op = Operator(platform)
        try:
            wait_for(
                "a heartbeat", lambda: platform.row(node.instance_id).last_heartbeat_at is not None
            )
            st = status(agent.proc.pid)
            assert int(st["CapEff"], 16) == KEPT_MASK, agent.output()
            assert int(st["CapBnd"], 16) == KEPT_MASK
            assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
            assert st["Seccomp_filters"] == "1"
            assert "confined: no_new_privs=True" in agent.output()
            body = (
                "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status"
            )
            doc = parse({"name": "status", "version": 1, "script": body}).signed(key)
            task = op.task(node.instance_id, "agent.exec", {"nodescript": doc.to_dict()})
            wait_for("the exec task", lambda: platform.tasks()[task].state == "succeeded")
            result = platform.tasks()[task].result
            child = dict(line.split(":\t") for line in result["stdout"].splitlines())
            assert int(child["CapBnd"], 16) == KEPT_MASK  # root in the script, but bounded
            assert int(child["CapEff"], 16) == KEPT_MASK
            assert child["NoNewPrivs"] == "1" and child["Seccomp"] == "2"
            assert child["Seccomp_filters"] == "2"  # the agent's, and the runner's again
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.close()
            op.close()
