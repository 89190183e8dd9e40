"""Two workers ticking one rollout at once, each in its own process, on SQLite and PostgreSQL.

The 20-node fleet of test_rollout_waves syncs through the real node API; no
tick runs in the test's process. Two ``ticker.py`` processes (what
``platform worker`` does each round: ``rollout_tick.tick`` in a write
transaction) tick in tight loops with the test's clock, and their first
compare-and-set waits for the other's: on PostgreSQL both hold generation 0
and race on it (one wins, the other's UPDATE matches no row and its events
are dropped with it); on SQLite the second cannot read before the first
committed (``BEGIN IMMEDIATE``), so no compare-and-set is ever lost there.

Either way: every write to the rollout is one ticker's won compare-and-set
(the generation counts them), every wave completes once, every instance is
admitted once, one ``rollout.completed``, one audit row per transition.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.platform.db import AuditLogEntry, FleetEvent, Rollout
from tests.platform.nodeapi.conftest import NodePlatform
from tests.platform.rollouts.fleet import digest, make_fleet, rollout
from tests.platform.test_preview import publish

pytestmark = pytest.mark.slow  # two Python processes ticking for about 40 s

TICKER = Path(__file__).with_name("ticker.py")
NAMES = ("a", "b")
MAX_ROUNDS = 60
ACK_WAITS = 3000  # 10 ms each: a ticker that does not answer for 30 s has died or hung


def _write_clock(folder: Path, p: NodePlatform) -> str:
    now = p.clock().isoformat()
    tmp = folder / "clock.tmp"
    tmp.write_text(now)
    tmp.replace(folder / "clock")
    return now


def _wait_acks(folder: Path, now: str, procs: list[subprocess.Popen[bytes]]) -> None:
    """Both tickers ran a whole tick with ``now`` (so after the agents' sync)."""
    for _ in range(ACK_WAITS):
        acks = [folder / f"ack-{n}" for n in NAMES]
        if all(a.exists() and a.read_text() == now for a in acks):
            return
        assert all(p.poll() is None for p in procs), "a ticker exited"
        time.sleep(0.01)
    raise AssertionError(f"the tickers did not tick with {now}")


def test_two_worker_processes_tick_each_transition_once(
    node_platform: NodePlatform, db_url: str, tmp_path: Path
) -> None:
    p = node_platform
    fleet = make_fleet(p)
    fleet.tick = lambda: 0  # type: ignore[method-assign]  # only the two tickers tick
    good = publish(p, "app", "3.0.0", files=["/etc/app.conf"], digest=digest("3.0.0"))
    policy = {
        "waves": [{"percent": 10}, {"percent": 30}, {"percent": 60}],
        "max_converging": 3,
        "soak_seconds": 1,
    }
    r = p.call("POST", f"/node_module_versions/{good['id']}/rollouts", json={"policy": policy})
    assert r.status_code == 201, r.text
    rid: str = r.json()["rollout"]["id"]
    sqlite = db_url.startswith("sqlite")

    folder = tmp_path / "tickers"
    folder.mkdir()
    now = _write_clock(folder, p)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "src")}
    barrier = "2" if sqlite else "60"  # SQLite: under its busy_timeout (the other waits on it)
    procs = [
        subprocess.Popen([sys.executable, str(TICKER), db_url, str(folder), n, barrier], env=env)
        for n in NAMES
    ]
    try:
        _wait_acks(folder, now, procs)
        doc: dict[str, Any] = {}
        for _ in range(MAX_ROUNDS):
            fleet.sync()  # the agents, then their heartbeats flushed; no tick here
            _wait_acks(folder, _write_clock(folder, p), procs)
            doc = rollout(p, rid)
            if doc["state"] != "running":
                break
    finally:
        (folder / "stop").touch()
        for proc in procs:
            proc.wait(60)
    reports = [json.loads((folder / f"report-{n}.json").read_text()) for n in NAMES]
    print("tickers:", reports)
    assert [proc.returncode for proc in procs] == [0, 0]

    assert doc["state"] == "completed", doc
    assert [w["counts"] for w in doc["waves"]] == [
        {"succeeded": 2}, {"succeeded": 6}, {"succeeded": 12}
    ]  # fmt: skip
    assert set(fleet.served().values()) == {"3.0.0"}
    with Session(p.engine) as s:
        r_ = s.get(Rollout, rid)
        assert r_ is not None
        generation = r_.generation
        events = [
            (e.kind, e.payload)
            for e in s.scalars(
                select(FleetEvent)
                .where(FleetEvent.kind.like("rollout.%"))
                .order_by(FleetEvent.occurred_at, FleetEvent.id)
            )
        ]
        audits = Counter(
            s.scalars(select(AuditLogEntry.action).where(AuditLogEntry.target_id == rid))
        )
    # Every write to the rollout is a compare-and-set one ticker won; none was lost
    # silently (a lost one wrote nothing: no event, no audit row).
    assert generation == sum(rep["won"] for rep in reports)
    if sqlite:
        assert sum(rep["lost"] for rep in reports) == 0  # the write lock: none can lose
    else:
        assert all(rep["barrier_met"] for rep in reports)
        assert sum(rep["lost"] for rep in reports) >= 1  # they raced on generation 0
    kinds = Counter(k for k, _ in events)
    assert kinds["rollout.started"] == 1
    assert kinds["rollout.wave_completed"] == 3
    assert kinds["rollout.completed"] == 1
    assert [pl["wave"] for k, pl in events if k == "rollout.wave_completed"] == [1, 2, 3]
    admitted = Counter(i for k, pl in events if k == "rollout.admitted" for i in pl["instances"])
    assert admitted == Counter({c.instance_id: 1 for c in fleet.nodes})
    assert audits == Counter({"rollout.start": 1, "rollout.complete": 1})
