"""End to end: the agent process in its own network namespace against the real platform.

The namespace and veth pair are created and removed by the fixture; the
real platform (create_app on SQLite, served over mTLS by tlsserve/uvicorn)
listens on the host end, the agent runs inside via `ip netns exec`, so its
only way to the platform is the veth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from powernode.platform.db import NodeAgentStatus
from tests.agent.agentproc import AgentProcess, Netns, agent_cmd, wait_for, write_config
from tests.conftest import require_root, require_tool
from tests.platform.nodeapi.realplatform import real_platform

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def netns() -> Iterator[Netns]:
    require_root()
    require_tool("ip")
    ns = Netns()
    try:
        yield ns
    finally:
        ns.remove()


def test_agent_in_netns_enrolls_heartbeats_runs_tasks_delivers_events(
    netns: Netns, tmp_path: Path
) -> None:
    agent = None
    with real_platform(tmp_path, host=netns.host_ip) as platform:
        try:
            iid = platform.instance("e2e-netns")
            token = tmp_path / "token"
            token.write_text(platform.token(iid) + "\n")
            state = tmp_path / "state"
            config = write_config(
                tmp_path / "agent.toml",
                platform_url=platform.url,
                state_dir=state,
                heartbeat_seconds=0.2,
                host_root=tmp_path,
            )
            out = agent_cmd(
                [
                    "enroll",
                    "--config",
                    str(config),
                    "--token-file",
                    str(token),
                    "--platform-ca",
                    str(platform.ca_file),
                    "--no-discover",
                    "--json",
                ],
                netns.prefix(),
            )
            assert json.loads(out)["instance_id"] == iid
            tasks = [platform.add_task(iid, "agent.echo", {"n": n}) for n in range(5)]
            unknown = platform.add_task(iid, "thing.unknown")
            agent = AgentProcess(config, tmp_path / "agent.log", netns.prefix())

            def reported() -> bool:
                found = platform.tasks()
                return all(found[t].state in ("succeeded", "failed") for t in [*tasks, unknown])

            wait_for("every task to be reported", reported)
            wait_for(
                "6 task events",
                lambda: len([e for e in platform.events(iid) if e.kind.startswith("task.")]) >= 6,
            )
            wait_for("a heartbeat", lambda: platform.row(iid).last_heartbeat_at is not None)
            assert agent.terminate() == 0, agent.output()
            agent = None
            found = platform.tasks()
            for n, t in enumerate(tasks):
                assert found[t].state == "succeeded"
                assert found[t].result == {"echo": {"n": n}}
                assert found[t].attempts == 1
            assert found[unknown].state == "failed"
            kinds = sorted(e.kind for e in platform.events(iid))
            # Task events only: the agent may also report its module syncs.
            assert [k for k in kinds if k.startswith("task.")] == ["task.completed"] * 5 + [
                "task.failed"
            ]
            with Session(platform.engine) as s:
                status = s.get(NodeAgentStatus, iid)
                assert status is not None
                assert status.agent_version  # boot_id: empty, host_root is a bare tmp dir
            view = json.loads(
                agent_cmd(["introspect", "--config", str(config), "--no-identity", "--json"])
            )
            assert view["certificate"]["instance_id"] == iid
            assert view["buffer"] == {"events": 0, "outcomes": 0}
        finally:
            if agent is not None:
                agent.close()
