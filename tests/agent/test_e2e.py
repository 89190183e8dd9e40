"""End to end: the agent process in its own network namespace against a TLS platform.

The namespace and veth pair are created and removed by the fixture; the
platform listens on the host end, the agent runs inside via `ip netns exec`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from powernode.agent.lifecycle import SystemClock
from tests.agent.agentproc import AgentProcess, Netns, agent_cmd, wait_for, write_config
from tests.agent.fakeplatform import FakePlatform, TlsServer
from tests.conftest import require_root, require_tool

pytestmark = [pytest.mark.netns, pytest.mark.slow]
INSTANCE = "3f0e1c2a-9b8d-4e6f-a1b2-c3d4e5f60718"


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
    platform = FakePlatform(SystemClock())
    server = TlsServer(platform, netns.host_ip, tmp_path)
    agent = None
    try:
        token = tmp_path / "token"
        token.write_text(platform.token(INSTANCE) + "\n")
        state = tmp_path / "state"
        config = write_config(
            tmp_path / "agent.toml",
            platform_url=server.url,
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
                str(server.ca_file),
                "--no-discover",
                "--json",
            ],
            netns.prefix(),
        )
        assert json.loads(out)["instance_id"] == INSTANCE
        tasks = [platform.add_task(INSTANCE, "agent.echo", {"n": n}) for n in range(5)]
        unknown = platform.add_task(INSTANCE, "thing.unknown")
        agent = AgentProcess(config, tmp_path / "agent.log", netns.prefix())
        wait_for(
            "every task to be reported",
            lambda: all(platform.tasks[t].state in ("done", "failed") for t in [*tasks, unknown]),
        )
        wait_for("3 heartbeats", lambda: len(platform.heartbeats) >= 3)
        wait_for("7 events", lambda: len(platform.events) >= 6)
        assert agent.terminate() == 0, agent.output()
        agent = None
        assert server.peers == {netns.node_ip}  # it really came from the namespace
        for n, t in enumerate(tasks):
            assert platform.tasks[t].outcomes == [("ack", {"result": {"echo": {"n": n}}})]
        assert platform.tasks[unknown].outcomes[0][1]["retryable"] is False
        kinds = sorted(e["kind"] for e in platform.events.values())
        assert kinds == ["task.completed"] * 5 + ["task.failed"]
        assert platform.duplicates == 0
        heartbeat = platform.heartbeats[0][1]
        assert set(heartbeat) >= {
            "boot_id",
            "agent_version",
            "running_module_digests",
            "load",
            "mem",
        }
        view = json.loads(
            agent_cmd(["introspect", "--config", str(config), "--no-identity", "--json"])
        )
        assert view["certificate"]["instance_id"] == INSTANCE
        assert view["buffer"] == {"events": 0, "outcomes": 0}
    finally:
        if agent is not None:
            agent.close()
        server.close()
