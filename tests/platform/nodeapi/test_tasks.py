"""The lease queue: visibility timeout, attempts, ack once, fail with backoff, no double lease."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from powernode.platform.db import Task
from powernode.platform.services.nodeapi import tasks
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from tests.platform.nodeapi.conftest import Creds, NodePlatform


def _enqueue(p: NodePlatform, creds: Creds, n: int = 1, **body: object) -> list[str]:
    out = []
    for i in range(n):
        r = p.call(
            "POST",
            f"/node_instances/{creds.instance_id}/tasks",
            json={"kind": "test.echo", "payload": {"i": i}, **body},
        )
        assert r.status_code == 201, r.text
        out.append(r.json()["task"]["id"])
        p.clock.advance(0.001)  # a stable creation order
    return out


def _lease(p: NodePlatform, creds: Creds, n: int = 10) -> list[dict[str, object]]:
    r = p.node(creds, "POST", "/tasks/lease", json={"max": n})
    assert r.status_code == 200, r.text
    tasks_: list[dict[str, object]] = r.json()["tasks"]
    return tasks_


def _task(p: NodePlatform, creds: Creds, task_id: str) -> dict[str, object]:
    found = p.call("GET", f"/node_instances/{creds.instance_id}/tasks").json()["tasks"]
    return next(t for t in found if t["id"] == task_id)


def test_lease_returns_at_most_max_in_creation_order(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    ids = _enqueue(p, creds, 5)
    first = _lease(p, creds, 3)
    assert [t["id"] for t in first] == ids[:3]
    assert all(t["attempt"] == 1 for t in first)
    assert [t["payload"] for t in first] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [t["id"] for t in _lease(p, creds, 10)] == ids[3:]
    assert _lease(p, creds, 10) == []


def test_expired_lease_is_offered_again_with_the_next_attempt(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds)
    (t,) = _lease(p, creds)
    p.clock.advance(299)  # visibility timeout 300 s: not yet
    assert _lease(p, creds) == []
    p.clock.advance(1)
    (again,) = _lease(p, creds)
    assert again["id"] == tid and again["attempt"] == 2
    assert again["lease_expires_at"] != t["lease_expires_at"]


def test_lease_expiring_on_the_last_attempt_fails_the_task(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds, max_attempts=2)
    for _ in range(2):
        assert [t["id"] for t in _lease(p, creds)] == [tid]
        p.clock.advance(300)
    assert _lease(p, creds) == []
    t = _task(p, creds, tid)
    assert t["state"] == "failed" and t["attempts"] == 2
    assert "lease expired" in str(t["error"])


def test_one_lease_fails_a_dead_last_attempt_and_leases_the_rest(
    node_platform: NodePlatform,
) -> None:
    # The same statement does both: the dead task is failed, not leased, and
    # the queued one behind it is leased.
    p = node_platform
    creds = p.enroll()
    (dead,) = _enqueue(p, creds, max_attempts=1)
    assert [t["id"] for t in _lease(p, creds)] == [dead]
    p.clock.advance(300)
    (fresh,) = _enqueue(p, creds)
    assert [(t["id"], t["attempt"]) for t in _lease(p, creds)] == [(fresh, 1)]
    t = _task(p, creds, dead)
    assert (t["state"], t["attempts"]) == ("failed", 1)
    assert "lease expired on the last attempt" in str(t["error"])
    assert _lease(p, creds) == []


def test_ack_is_recorded_once(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds)
    _lease(p, creds)
    r = p.node(creds, "POST", f"/tasks/{tid}/ack", json={"result": {"ok": 1}})
    assert r.status_code == 200 and r.json() == {"id": tid, "state": "succeeded"}
    before = p.snapshot()
    for body in ({"result": {"ok": 1}}, {"result": {"other": 2}}):
        r = p.node(creds, "POST", f"/tasks/{tid}/ack", json=body)
        assert r.status_code == 200 and r.json()["state"] == "succeeded"
    r = p.node(creds, "POST", f"/tasks/{tid}/fail", json={"error": "late", "retryable": True})
    assert r.status_code == 200 and r.json()["state"] == "succeeded"
    assert p.snapshot() == before
    assert _task(p, creds, tid)["result"] == {"ok": 1}


def test_ack_of_a_task_not_leased_is_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds)
    before = p.snapshot()
    r = p.node(creds, "POST", f"/tasks/{tid}/ack", json={"result": {}})
    assert r.status_code == 409
    assert "queued, not leased" in r.json()["detail"]
    r = p.node(creds, "POST", "/tasks/00000000-0000-4000-8000-000000000000/ack", json={})
    assert r.status_code == 404
    assert p.snapshot() == before


def test_late_ack_after_an_expired_lease_still_counts_once(node_platform: NodePlatform) -> None:
    # The node was slow, not dead: its ack arrives after the lease expired
    # (not re-leased yet). The outcome is real; it is recorded, once.
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds)
    _lease(p, creds)
    p.clock.advance(400)
    assert p.node(creds, "POST", f"/tasks/{tid}/ack", json={"result": {}}).status_code == 200
    assert _lease(p, creds) == []
    assert _task(p, creds, tid)["state"] == "succeeded"


def test_retryable_failure_backs_off_then_fails_for_good(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds, max_attempts=3)
    for attempt, backoff in ((1, 10), (2, 20)):
        (t,) = _lease(p, creds)
        assert t["attempt"] == attempt
        r = p.node(creds, "POST", f"/tasks/{tid}/fail", json={"error": "e", "retryable": True})
        assert r.json()["state"] == "queued"
        p.clock.advance(backoff - 1)
        assert _lease(p, creds) == []  # backing off
        p.clock.advance(1)
    (t,) = _lease(p, creds)
    assert t["attempt"] == 3
    r = p.node(creds, "POST", f"/tasks/{tid}/fail", json={"error": "boom", "retryable": True})
    assert r.json()["state"] == "failed"
    assert _task(p, creds, tid)["error"] == "boom"


def test_non_retryable_failure_is_final(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds, max_attempts=5)
    _lease(p, creds)
    r = p.node(creds, "POST", f"/tasks/{tid}/fail", json={"error": "bad", "retryable": False})
    assert r.json()["state"] == "failed"
    p.clock.advance(3600)
    assert _lease(p, creds) == []


@pytest.mark.parametrize("body", [{"max": 0}, {"max": 101}, {"max": 5, "instance": "x"}])
def test_lease_body_is_checked(node_platform: NodePlatform, body: dict[str, object]) -> None:
    p = node_platform
    creds = p.enroll()
    assert p.node(creds, "POST", "/tasks/lease", json=body).status_code == 422


@pytest.mark.postgres
def test_no_double_lease_under_16_concurrent_lessees(node_platform: NodePlatform) -> None:
    p = node_platform
    if p.engine.dialect.name != "postgresql":
        pytest.skip("the SKIP LOCKED path; SQLite serialises writers")
    creds = p.enroll()
    now = datetime.now(UTC)
    with Session(p.engine) as s:
        s.add_all(
            Task(
                kind="test.echo",
                instance_id=creds.instance_id,
                payload={"i": i},
                available_at=now,
                created_at=now,
                updated_at=now,
            )
            for i in range(400)
        )
        s.commit()
    seen: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    policy = NodeApiPolicy()
    start = threading.Barrier(16)

    def lessee() -> None:
        try:
            start.wait(10)
            for _ in range(200):  # bounded: 400 tasks / 3 per lease / 16 lessees
                with Session(p.engine) as s, s.begin():
                    got = tasks.lease(s, creds.instance_id, 3, now, policy)
                if not got:
                    return
                with lock:
                    seen.extend(t.id for t in got)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=lessee) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    counts = Counter(seen)
    assert len(counts) == 400
    assert max(counts.values()) == 1
    with Session(p.engine) as s:
        attempts = Counter(t.attempts for t in s.query(Task).all())
    assert attempts == {1: 400}
