"""``exec`` end to end: the operator signs (``powernode nodescript sign``), registers and
runs a NodeScript on the real platform; the agent process leases the ``agent.exec`` task,
verifies, runs and reports; ``powernode-agent exec NAME`` fetches and runs it by hand.

Bad input: an unsigned document refused at registration (422) and by the node; a
document signed by a key the node does not trust refused by the node, nothing run; a
script past its timeout killed and reported; versions that do not grow refused (409).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.cli.main import app as powernode_app
from powernode.signing import generate_private_key, write_key_pair
from powernode.signing.nodescript import parse
from tests.agent.agentproc import AGENT, AgentProcess, agent_env, wait_for
from tests.agent.nodecmds import Operator, enrolled
from tests.platform.nodeapi.realplatform import real_platform

pytestmark = [pytest.mark.slow]


def sign(
    tmp: Path, key: Path, name: str, version: int, body: str, **opts: str
) -> dict[str, object]:
    src = tmp / f"{name}-{version}.sh"
    src.write_text(body)
    out = tmp / f"{name}-{version}.json"
    args = ["nodescript", "sign", str(src), "--name", name, "--version", str(version),
            "--key", str(key), "--out", str(out)]  # fmt: skip
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", v]
    result = CliRunner().invoke(powernode_app, args, env={"COSIGN_PASSWORD": "pw"})
    assert result.exit_code == 0, result.output
    doc: dict[str, object] = json.loads(out.read_text())
    return doc


def test_operator_registers_and_runs_a_nodescript_the_agent_verifies(tmp_path: Path) -> None:
    key, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    write_key_pair(key, pub, generate_private_key(), "pw")
    with real_platform(tmp_path) as platform:
        node = enrolled(tmp_path, platform, "exec-node", nodescript_keys_file=pub)
        op = Operator(platform)
        agent = AgentProcess(node.config, tmp_path / "agent.log")
        try:
            hello = sign(tmp_path, key, "hello", 1, "echo hello from $POWERNODE_NODESCRIPT\n")
            r = op.call("POST", "/nodescripts", json=hello)
            assert r.status_code == 201, r.text
            assert r.json()["nodescript"]["version"] == 1
            # versions only grow
            r = op.call("POST", "/nodescripts", json=hello)
            assert r.status_code == 409 and "not above the newest" in r.json()["detail"]
            # unsigned: refused by the platform, field named
            unsigned = {k: v for k, v in hello.items() if k not in ("signature", "key_fingerprint")}
            unsigned["version"] = 2
            r = op.call("POST", "/nodescripts", json=unsigned)
            assert r.status_code == 422 and "signature" in r.text, r.text

            r = op.call(
                "POST", f"/node_instances/{node.instance_id}/nodescripts/hello/run", json={}
            )
            assert r.status_code == 201, r.text
            ok_task = r.json()["task"]["id"]
            # a document signed by a key the node does not trust, and an unsigned one, sent
            # straight as tasks: the node refuses both, and runs nothing
            marker = tmp_path / "ran"
            stranger = parse({"name": "evil", "version": 1, "script": f"touch {marker}"}).signed(
                generate_private_key()
            )
            wrong_task = op.task(node.instance_id, "agent.exec", {"nodescript": stranger.to_dict()})
            bare = {"name": "evil", "version": 1, "script": f"touch {marker}"}
            bare_task = op.task(node.instance_id, "agent.exec", {"nodescript": bare})
            slow = sign(tmp_path, key, "slow", 1, "echo started; sleep 60\n", timeout="1")
            assert op.call("POST", "/nodescripts", json=slow).status_code == 201
            r = op.call("POST", f"/node_instances/{node.instance_id}/nodescripts/slow/run", json={})
            slow_task = r.json()["task"]["id"]

            def done(task: str) -> bool:
                return platform.tasks()[task].state in ("succeeded", "failed")

            for t in (ok_task, wrong_task, bare_task, slow_task):
                wait_for(f"task {t}", lambda t=t: done(t))
            found = platform.tasks()
            assert found[ok_task].state == "succeeded", found[ok_task].error
            result = found[ok_task].result
            assert result["exit_code"] == 0 and result["stdout"] == "hello from hello\n"
            assert result["signed_by"] == hello["key_fingerprint"]
            assert found[ok_task].max_attempts == 1
            assert found[wrong_task].state == "failed"
            assert "refused" in found[wrong_task].error
            assert "verifies with none of the 1 trusted key(s)" in found[wrong_task].error
            assert found[bare_task].state == "failed" and "is unsigned" in found[bare_task].error
            assert not marker.exists()
            assert found[slow_task].state == "failed"
            assert "killed after its timeout of 1 s" in found[slow_task].error
            assert found[slow_task].attempts == 1

            # by hand on the node: fetched over the node API, exit code passed through
            fail = sign(tmp_path, key, "hello", 2, "echo two; exit 7\n")
            assert op.call("POST", "/nodescripts", json=fail).status_code == 201
            proc = subprocess.run(
                [AGENT, "exec", "hello", "--config", str(node.config)],
                capture_output=True, text=True, env=agent_env(), timeout=60, check=False,
            )  # fmt: skip
            assert proc.returncode == 7 and proc.stdout == "two\n", proc.stderr
            proc = subprocess.run(
                [AGENT, "exec", "hello", "--version", "1", "--config", str(node.config), "--json"],
                capture_output=True, text=True, env=agent_env(), timeout=60, check=False,
            )  # fmt: skip
            assert proc.returncode == 0 and json.loads(proc.stdout)["version"] == 1
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.close()
            op.close()
