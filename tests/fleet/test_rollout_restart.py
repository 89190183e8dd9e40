"""Issue 19's rollout must-show on the real deployment: every platform process restarted.

2 API processes (``platform serve --no-worker``) and 2 workers (``platform
worker``, each ticking rollouts every half second, concurrently) on one
PostgreSQL behind haproxy; 20 simulated agents (the agent's own
``NodeClient``, enrolled with their own certificates) sync their desired set
through the load balancer, "attach" what they are served and heartbeat the
digests they run, as the agent does.

A good version rolls out in 3 waves (2, 6, 12 instances) with a disruption
budget of 3 and a soak. In the middle of wave 2 (some instances soaking,
some still pending) the agents go quiet, the rollout is read through the API,
then every API process and every worker is SIGKILLed together and started
again. The rollout read after the restart is the same document (same wave,
same per-instance states, same ``updated_at``), every agent is served what it
was, and no event or audit row was added. The agents then carry on; as wave
3 starts everything is SIGKILLed again, this time busy (right after the
agents' sync, heartbeats still buffered, workers ticking). The rollout
completes, every node served 2.0.0 only once its wave admitted it and never
taken back, every wave completed once and every instance admitted once
although two workers ticked it throughout and all of them died twice.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.fleet.cluster import Cluster
from powernode.fleet.node import NodeConfig, SimNode, Stats
from powernode.fleet.sim import SimConfig, _mint, _operator
from powernode.node.fields import Digest
from powernode.node.records import HeartbeatRequest
from powernode.platform.db import AuditLogEntry, FleetEvent, Rollout
from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token
from tests.fleet.test_scaled import _Via, database
from tests.platform.conftest import ROLES
from tests.platform.test_preview import assign, publish

__all__ = ["database"]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MODULE = "app"
NODES = 20
MAX_ROUNDS = 80  # agent rounds; the good rollout needs about 25
QUIET_READS = 40  # reads of a quiet rollout before it must have stopped changing
WORKER_ROUNDS = 4  # rounds every worker must have run after the restart
# Half a second between worker rounds (each ticks rollouts) instead of a minute.
ENV = {"POWERNODE_INGEST_POLL_SECONDS": "0.5"}


def digest(version: str) -> str:
    return "sha256:" + hashlib.sha256(f"{MODULE}-{version}".encode()).hexdigest()


@dataclass
class Agent:
    """One simulated agent: the sync the agent's runtime does, through its own client."""

    node: SimNode
    running: dict[str, Digest] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.node.instance_id

    def served(self) -> str:
        """The version of MODULE the platform serves this instance now."""
        assert self.node.client is not None
        doc = self.node.client.modules()
        (m,) = [m for m in doc.modules if m.name == MODULE]
        return m.version

    def sync(self) -> str:
        """``GET /node_api/modules``, attach what it is served, heartbeat what runs."""
        client = self.node.client
        assert client is not None
        doc = client.modules()
        for m in doc.modules:  # every attach succeeds: a good version
            self.running[m.name] = m.composefs_digest
        client.heartbeat(
            HeartbeatRequest(
                boot_id=self.node.name, agent_version="sim", running_module_digests=self.running
            )
        )
        (m,) = [m for m in doc.modules if m.name == MODULE]
        return m.version


class Deployment:
    """The cluster, an operator client through haproxy and the database for counting."""

    def __init__(self, c: Cluster, db_url: str, tmp_path: Path) -> None:
        self.c = c
        self.engine = make_engine(db_url)
        with Session(self.engine) as s:
            ctx = Ctx(s, Actor("test-setup", None, frozenset(SCOPES)), datetime.now(UTC))
            self.tokens = {role: create_token(ctx, role, sc)[1] for role, sc in ROLES.items()}
            s.commit()
        self.via = _Via(c.url, c.platform_ca, self.tokens, self.engine)
        self.tmp_path = tmp_path
        self.agents: list[Agent] = []

    def close(self) -> None:
        for a in self.agents:
            a.node.drain()  # closes its client
        self.via.client.close()
        self.engine.dispose()

    def enroll(self, count: int) -> list[Agent]:
        cfg = SimConfig(self.c.url, self.c.platform_ca, self.tokens["admin"], tasks_per_node=0)
        agents = []
        with _operator(cfg) as op:
            for i in range(count):
                name = f"roll-{i:02d}"
                node = SimNode(
                    name, self.tmp_path / "pki" / name, self.c.url, self.c.platform_ca,
                    Stats(), NodeConfig(),
                )  # fmt: skip
                node.enroll(_mint(op, cfg, name)[1])
                agents.append(Agent(node))
                self.agents.append(agents[-1])
        return agents

    def rollout(self, rid: str) -> dict[str, Any]:
        r = self.via.call("GET", f"/rollouts/{rid}", role="read")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()["rollout"]
        return body

    def generation(self, rid: str) -> int:
        with Session(self.engine) as s:
            r = s.get(Rollout, rid)
            assert r is not None
            return r.generation

    def records(self, rid: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        """The rollout's events (kind, payload) and audit actions, in insertion order."""
        with Session(self.engine) as s:
            events = [
                (e.kind, dict(e.payload))
                for e in s.scalars(
                    select(FleetEvent)
                    .where(FleetEvent.kind.like("rollout.%"))
                    .order_by(FleetEvent.occurred_at, FleetEvent.id)
                )
                if e.payload.get("rollout_id") == rid
            ]
            audits = list(
                s.scalars(
                    select(AuditLogEntry.action)
                    .where(AuditLogEntry.target_id == rid)
                    .order_by(AuditLogEntry.id)
                )
            )
        return events, audits

    def worker_rounds(self, i: int) -> int:
        """Rounds worker ``i`` logged since its last start."""
        text = self.c.worker_procs[i].log.read_text(errors="replace")
        return text[text.rfind("--- start ") :].count("ingest round:")


def _settle() -> None:
    """Past the API processes' heartbeat flush (0.5 s) and a worker round (0.5 s)."""
    time.sleep(1.2)


def _quiet(d: Deployment, rid: str) -> dict[str, Any]:
    """The rollout once no worker changes it any more (the agents are quiet)."""
    last = d.generation(rid)
    for _ in range(QUIET_READS):
        _settle()
        now = d.generation(rid)
        if now == last:
            return d.rollout(rid)
        last = now
    raise AssertionError(f"rollout {rid} still changing with the agents quiet")


def _through_haproxy(d: Deployment) -> None:
    """haproxy has seen a restarted API process up (it checks every second)."""
    for _ in range(QUIET_READS):
        try:
            if d.via.client.get(d.c.url + "/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        _settle()
    raise AssertionError("no API process answered through haproxy after the restart")


def _kill_all_and_restart(d: Deployment) -> None:
    """SIGKILL every API process and every worker at once; start them all again; wait
    until haproxy has one in rotation and every worker has run a few rounds."""
    c = d.c
    procs = [*c.api_procs, *c.worker_procs]
    for p in procs:
        assert p.process is not None
        p.process.send_signal(signal.SIGKILL)
    for p in procs:
        assert p.process is not None
        assert p.process.wait(30) == -signal.SIGKILL
    for p in procs:
        c.restart(p)
    _through_haproxy(d)
    for _ in range(QUIET_READS):  # every worker ticked the rollouts several times since
        if all(d.worker_rounds(i) >= WORKER_ROUNDS for i in range(len(c.worker_procs))):
            return
        _settle()
    raise AssertionError("the restarted workers ran no rounds")


def _members(doc: dict[str, Any]) -> list[set[str]]:
    return [set(w["instances"]) for w in doc["waves"]]


def test_every_platform_process_killed_mid_rollout_resumes_it_exactly(
    database: str, tmp_path: Path
) -> None:
    with Cluster(database, tmp_path / "data", apis=2, workers=2, env=ENV) as c:
        d = Deployment(c, database, tmp_path)
        try:
            _run(d, c)
        finally:
            d.close()


def _run(d: Deployment, c: Cluster) -> None:
    publish(d.via, MODULE, "1.0.0", files=["/etc/app.conf"], state="live", digest=digest("1.0.0"))
    assign(d.via, "base", MODULE)
    agents = d.enroll(NODES)
    assert {a.sync() for a in agents} == {"1.0.0"}
    good = publish(d.via, MODULE, "2.0.0", files=["/etc/app.conf"], digest=digest("2.0.0"))
    policy = {
        "waves": [{"percent": 10}, {"percent": 30}, {"percent": 60}],
        "max_converging": 3,
        "soak_seconds": 3,
    }
    r = d.via.call("POST", f"/node_module_versions/{good['id']}/rollouts", json={"policy": policy})
    assert r.status_code == 201, r.text
    rid: str = r.json()["rollout"]["id"]
    w1, w2, w3 = _members(d.rollout(rid))
    assert (len(w1), len(w2), len(w3)) == (2, 6, 12)

    on_new: set[str] = set()

    def round_() -> dict[str, Any]:
        """Every agent syncs once; what is served is checked against the rollout's waves."""
        served = {a.id: a.sync() for a in agents}
        _settle()
        doc = d.rollout(rid)  # read after serving: its wave is at least the served one's
        now_new = {i for i, v in served.items() if v == "2.0.0"}
        admitted = set().union(*_members(doc)[: doc["current_wave"]])
        assert now_new <= admitted, f"served 2.0.0 outside an admitted wave: {now_new - admitted}"
        assert on_new <= now_new, f"taken back from 2.0.0: {on_new - now_new}"
        on_new.update(now_new)
        return doc

    # Mid wave 2: its first instances converged and soaking, the rest still pending.
    for _ in range(MAX_ROUNDS):
        doc = round_()
        counts = doc["waves"][1]["counts"]
        if doc["current_wave"] == 2 and counts.get("pending") and counts.get("converged"):
            break
    else:
        raise AssertionError(f"wave 2 never had a soaking instance: {d.rollout(rid)}")

    # The agents go quiet; the rollout settles; everything about it is read.
    before = _quiet(d, rid)
    assert before["state"] == "running" and before["current_wave"] == 2
    wave2 = before["waves"][1]["counts"]
    assert wave2.get("pending", 0) >= 1 and wave2.get("converged", 0) >= 1, wave2
    assert sum(wave2.values()) == 6, wave2
    assert before["waves"][2]["counts"] == {"pending": 12}
    served_before = {a.id: a.served() for a in agents}
    assert {i for i, v in served_before.items() if v == "2.0.0"} == w1 | {
        i for i, s in before["waves"][1]["instances"].items() if s != "pending"
    }
    records_before = d.records(rid)
    print("at the kill:", [w["counts"] for w in before["waves"]])
    generation_before = d.generation(rid)

    # Every platform process SIGKILLed at once, then started again.
    _kill_all_and_restart(d)
    _settle()

    assert d.rollout(rid) == before  # same wave, same states, not even written again
    assert d.generation(rid) == generation_before
    assert {a.id: a.served() for a in agents} == served_before
    assert d.records(rid) == records_before

    # The agents carry on: the rollout completes where it left off. As wave 3
    # starts, everything is killed again while busy: right after the agents' sync,
    # their heartbeats still in the API processes' buffers, the workers ticking.
    busy_kill = False
    for _ in range(MAX_ROUNDS):
        doc = round_()
        if doc["state"] != "running":
            break
        if doc["current_wave"] == 3 and not busy_kill:
            busy_kill = True
            for a in agents:
                a.sync()
            _kill_all_and_restart(d)
            after = d.rollout(rid)
            assert after["state"] == "running" and after["current_wave"] == 3, after
    assert busy_kill
    assert doc["state"] == "completed", doc
    assert [w["counts"] for w in doc["waves"]] == [
        {"succeeded": 2}, {"succeeded": 6}, {"succeeded": 12}
    ]  # fmt: skip
    assert {a.served() for a in agents} == {"2.0.0"}
    assert {str(a.running[MODULE]) for a in agents} == {digest("2.0.0")}

    # Each transition once, though two workers ticked throughout and all restarted.
    events, audits = d.records(rid)
    kinds = Counter(k for k, _ in events)
    assert kinds == Counter(
        {"rollout.started": 1, "rollout.admitted": kinds["rollout.admitted"],
         "rollout.wave_completed": 3, "rollout.completed": 1}
    ), kinds  # fmt: skip
    assert [p["wave"] for k, p in events if k == "rollout.wave_completed"] == [1, 2, 3]
    admitted = Counter(i for k, p in events if k == "rollout.admitted" for i in p["instances"])
    assert admitted == Counter({a.id: 1 for a in agents})  # every instance admitted once
    assert Counter(audits) == Counter({"rollout.start": 1, "rollout.complete": 1})
