"""Issue 19: several API processes and workers on one PostgreSQL behind haproxy (TCP, no TLS end).

- a revocation made through one API process is refused by another on the
  very next request (identity is read per request, docs/decisions.md);
- the must-show: simulated nodes (the agent's own client) against 3 API
  processes and 2 workers while one API process and one worker are
  SIGKILLed and restarted: no failed node request but a lease that was in
  flight (the agent does not resend a lease it sent), every event the
  nodes sent in ``fleet_events`` exactly once, no task leased twice.

Size: ``POWERNODE_FLEET_TEST_NODES`` (default 1,000 as in the issue),
``POWERNODE_FLEET_TEST_MINUTES`` (default 3) and ``POWERNODE_FLEET_TEST_TICK``
(seconds between beats; default 30, the agent's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from powernode.fleet.cluster import Cluster, spare_port
from powernode.fleet.node import NodeConfig, SimNode, Stats
from powernode.fleet.sim import SimConfig, Summary, _mint, _operator, simulate
from powernode.platform.db import FleetEvent, NodeInstance
from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token
from tests.platform import pgcluster
from tests.platform.conftest import ROLES
from tests.platform.test_preview import assign, publish

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NODES = int(os.environ.get("POWERNODE_FLEET_TEST_NODES", "1000"))
MINUTES = float(os.environ.get("POWERNODE_FLEET_TEST_MINUTES", "3"))
TICK = float(os.environ.get("POWERNODE_FLEET_TEST_TICK", "30"))
IN_CI = os.environ.get("CI") == "true"


def _need(tool: str, found: object) -> None:
    if not found:
        reason = f"{tool} is not installed (scripts/install-system-deps.sh test installs it)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def database() -> Iterator[str]:
    bindir = pgcluster.find_bindir()
    _need("PostgreSQL", bindir)
    _need("haproxy", shutil.which("haproxy"))
    assert bindir is not None
    with pgcluster.temp_cluster(bindir) as server:
        yield pgcluster.create_database(server, "fleet")


def _token(db_url: str) -> str:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            ctx = Ctx(s, Actor("test-setup", None, frozenset(SCOPES)), datetime.now(UTC))
            token = create_token(ctx, "fleet", ["write"])[1]
            s.commit()
    finally:
        engine.dispose()
    return token


def test_a_revocation_through_one_process_is_refused_by_the_other(
    database: str, tmp_path: Path
) -> None:
    with Cluster(database, tmp_path / "data", apis=2, workers=0) as c:
        token = _token(database)
        direct = [f"https://127.0.0.1:{c.api_port(i)}" for i in range(2)]
        cfg = SimConfig(direct[0], c.platform_ca, token)
        stats = Stats()
        node = SimNode("revoked", tmp_path / "pki", direct[1], c.platform_ca, stats, NodeConfig())
        with _operator(cfg) as op:
            _, secret = _mint(op, cfg, "revoked")
            node.enroll(secret)  # through process 1
            node.beat()
            assert node.beats == 1 and not stats.failures
            r = op.post(f"/node_instances/{node.instance_id}/certificates/revoke")  # process 0
            assert r.status_code == 200, r.text
        try:
            node.beat()  # process 1, the next request
        finally:
            node.drain()
        assert node.beats == 1
        assert stats.failures == {"status/heartbeat": 1}
        assert "401" in stats.failure_samples[0]


def _enrolled(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            n = s.scalar(
                select(func.count())
                .select_from(NodeInstance)
                .where(NodeInstance.cert_serial.is_not(None))
            )
    finally:
        engine.dispose()
    return int(n or 0)


def test_kill_an_api_process_and_a_worker_under_load(database: str, tmp_path: Path) -> None:
    env = {"POWERNODE_NODE_ROTATE_MIN_INTERVAL_SECONDS": "0"}
    with Cluster(database, tmp_path / "data", apis=3, workers=2, env=env) as c:
        token = _token(database)
        cfg = SimConfig(
            c.url,
            c.platform_ca,
            token,
            nodes=NODES,
            minutes=MINUTES,
            tick=TICK,
            processes=2,
            node=NodeConfig(rotate_every=TICK * 2.5, events_per_beat=1.0, modules_seconds=TICK),
        )
        out: list[Summary] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                out.append(simulate(cfg, echo=lambda s: None, every=3600))
            except BaseException as e:
                errors.append(e)

        sim = threading.Thread(target=run)
        sim.start()
        deadline = time.monotonic() + 600
        while _enrolled(database) < NODES and sim.is_alive() and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(TICK)  # every node past its first beat, mid-run
        c.kill(c.api_procs[1])
        c.kill(c.worker_procs[0])
        time.sleep(min(5.0, TICK))
        c.restart(c.worker_procs[0])
        c.restart(c.api_procs[1])
        sim.join(timeout=MINUTES * 60 + 900)
        assert not errors, errors
        summary = out[0]

    print(json.dumps(summary.to_json(), indent=1))
    assert summary.enroll_failures == []
    assert summary.enrolled == NODES
    assert summary.rotations > 0
    # The agent resends everything idempotent; a lease it sent is not resent
    # (its tasks come back after the visibility timeout): that is the in-flight one.
    others = {r: n for r, n in summary.failures.items() if r != "tasks/lease"}
    assert others == {}, summary.failure_samples
    assert summary.failures.get("tasks/lease", 0) <= cfg.threads * cfg.processes

    engine = make_engine(database)
    try:
        with Session(engine) as s:
            stored = s.scalars(
                select(FleetEvent.agent_event_id).where(FleetEvent.agent_event_id.is_not(None))
            ).all()
    finally:
        engine.dispose()
    counts = Counter(stored)
    sent = set(summary.event_ids)
    assert len(sent) == len(summary.event_ids) == summary.events_delivered
    assert sent <= set(counts), f"{len(sent - set(counts))} events lost"
    assert [e for e, n in counts.items() if n > 1] == []

    leased = Counter(task for task, _ in summary.leased)
    assert [t for t, n in leased.items() if n > 1] == []
    assert len(leased) > 0


def test_the_cluster_refuses_without_haproxy_or_api(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="at least one API process"):
        Cluster("postgresql://x", tmp_path, apis=0).start()
    assert not (tmp_path / "haproxy.cfg").exists()


def test_the_single_command_starts_and_stops_the_deployment(database: str, tmp_path: Path) -> None:
    port, data = spare_port(), tmp_path / "data"
    exe = Path(sys.executable).parent / "powernode"
    argv = [str(exe), "fleet", "cluster", "--api", "2", "--workers", "1"]
    argv += ["--port", str(port), "--data-dir", str(data), "--database", database]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"platform at https://127.0.0.1:{port}" in first, first + proc.stdout.read()
        ca = ssl.create_default_context(cafile=str(data / "pki" / "platform-ca.pem"))
        with httpx.Client(verify=ca, timeout=30) as c:
            for _ in range(4):  # leastconn over both processes, each answers
                assert c.get(f"https://127.0.0.1:{port}/healthz").status_code == 200
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 4, children  # 2 API processes, 1 worker, haproxy
        pids = [int(x) for x in children]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)  # drains and closes the pipe
    assert proc.returncode == 0
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )


class _Via:
    """test_preview's ``publish``/``assign`` through one real API process (HTTPS)."""

    def __init__(self, url: str, ca: Path, tokens: dict[str, str], engine: Engine) -> None:
        self.client = httpx.Client(
            base_url=url + "/api/v1/system",
            verify=ssl.create_default_context(cafile=str(ca)),
            timeout=60,
        )
        self.tokens = tokens
        self.engine = engine

    def call(self, method: str, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return self.client.request(method, path, headers=headers, **kw)


def test_a_desired_set_changed_through_one_process_is_served_by_the_other(
    database: str, tmp_path: Path
) -> None:
    with Cluster(database, tmp_path / "data", apis=2, workers=0) as c:
        engine = make_engine(database)
        with Session(engine) as s:
            ctx = Ctx(s, Actor("test-setup", None, frozenset(SCOPES)), datetime.now(UTC))
            tokens = {role: create_token(ctx, role, sc)[1] for role, sc in ROLES.items()}
            s.commit()
        direct = [f"https://127.0.0.1:{c.api_port(i)}" for i in range(2)]
        via0 = _Via(direct[0], c.platform_ca, tokens, engine)
        stats = Stats()
        node = SimNode("desired", tmp_path / "pki", direct[1], c.platform_ca, stats, NodeConfig())
        try:
            cfg = SimConfig(direct[0], c.platform_ca, tokens["admin"])
            with _operator(cfg) as op:
                node.enroll(_mint(op, cfg, "desired")[1])
            assert node.client is not None
            before = json.dumps(node.client.modules().to_json())  # process 1: cached there now
            assert "fleet-mod" not in before
            # a real digest shape: the node contract parses it (node/records.py)
            publish(via0, "fleet-mod", files=["/x"], state="live", digest="sha256:" + "ab" * 32)
            assign(via0, "base", "fleet-mod")
            after = json.dumps(node.client.modules().to_json())  # process 1, the next request
            assert "fleet-mod" in after
        finally:
            node.drain()
            via0.client.close()
            engine.dispose()
