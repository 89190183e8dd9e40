"""The real agent code against the real platform over mTLS (tlsserve, uvicorn, SQLite).

enroll → heartbeat → lease → execute → ack → events, then rotation; the
agent runs in process (its Runtime with a real NodeClient), the platform in
a thread on 127.0.0.1.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from powernode.agent.certstore import CertStore, Credentials
from powernode.agent.config import AgentConfig
from powernode.agent.enroll import enroll
from powernode.agent.lifecycle import StopSignal, SystemClock
from powernode.agent.runtime import Runtime
from powernode.agent.spool import Spool
from powernode.agent.tasks import InlineExecutor, default_registry
from powernode.agent.transport import NodeClient, tls_context
from powernode.node.records import HeartbeatRequest
from tests.platform.nodeapi.realplatform import real_platform


def test_agent_enrolls_heartbeats_runs_tasks_and_delivers_events(tmp_path: Path) -> None:
    with real_platform(tmp_path) as platform:
        iid = platform.instance("e2e-1")
        config = AgentConfig(
            platform_url=platform.url,
            state_dir=tmp_path / "state",
            host_root=tmp_path,
            heartbeat_seconds=0.05,
        )
        store = CertStore(config.pki_dir)
        with NodeClient(platform.url, tls=tls_context(platform.ca_file)) as client:
            info = enroll(
                store,
                client,
                platform.token(iid),
                platform_ca_pem=platform.ca_file.read_bytes(),
                now=datetime.now(UTC),
            )
        assert info.instance_id == iid
        ids = [platform.add_task(iid, "agent.echo", {"n": n}) for n in range(3)]
        unknown = platform.add_task(iid, "thing.unknown")

        def client_factory(creds: Credentials) -> NodeClient:
            tls = tls_context(creds.platform_ca_file, creds.cert_file, creds.key_file)
            return NodeClient(platform.url, tls=tls, rng=random.Random(1))  # noqa: S311

        stop = StopSignal()
        runtime = Runtime(
            config,
            store=store,
            spool=Spool(config.spool_file),
            client_factory=client_factory,
            executor=InlineExecutor(default_registry()),
            clock=SystemClock(),
            stop=stop,
            facts=lambda: HeartbeatRequest(boot_id="boot-e2e", agent_version="9.9", load=[0.5]),
            rng=random.Random(2),  # noqa: S311
        )
        assert runtime.run(max_beats=3) == 0
        found = platform.tasks()
        for n, tid in enumerate(ids):
            assert found[tid].state == "succeeded"
            assert found[tid].result == {"echo": {"n": n}}
            assert found[tid].attempts == 1
        assert found[unknown].state == "failed"  # not retryable: an unknown kind
        kinds = sorted(e.kind for e in platform.events(iid))
        assert kinds == ["task.completed"] * 3 + ["task.failed"]
        row = platform.row(iid)
        assert row.last_heartbeat_at is not None
        assert row.status == "running"
