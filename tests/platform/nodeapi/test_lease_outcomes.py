"""Outcomes carried by a lease: ``POST /tasks/lease {"max", "outcomes"}`` (issue 19).

The outcomes of earlier leases and the next lease are one transaction, all or
nothing: a refused outcome refuses the request and changes nothing. Exactly
once: a resent outcome (its answer was lost) is answered 200 and changes
nothing; a lease whose answer was lost comes back after the visibility
timeout; no task is leased twice, with concurrent lessees, on both databases.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from powernode.platform.db import Task
from powernode.platform.db.session import single_statement, writer
from powernode.platform.services.nodeapi import tasks
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from tests.platform.nodeapi.conftest import Creds, NodePlatform
from tests.platform.nodeapi.test_tasks import _enqueue, _lease, _task

Doc = dict[str, Any]  # Any: JSON


def _ack(t: Doc, **extra: object) -> Doc:
    return {"id": t["id"], "outcome": "ack", "result": {"ok": t["id"]}, "attempt": t["attempt"]}


def _carry(p: NodePlatform, creds: Creds, outcomes: list[Doc], n: int = 1) -> Doc:
    r = p.node(creds, "POST", "/tasks/lease", json={"max": n, "outcomes": outcomes})
    assert r.status_code == 200, r.text
    doc: Doc = r.json()
    return doc


def test_a_lease_records_the_outcome_it_carries_and_leases_the_next(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    creds = p.enroll()
    ids = _enqueue(p, creds, 3)
    (first,) = _lease(p, creds, 1)
    got = _carry(p, creds, [_ack(first)])
    assert got["outcomes"] == [{"id": ids[0], "status": 200, "state": "succeeded"}]
    assert [t["id"] for t in got["tasks"]] == [ids[1]]
    assert _task(p, creds, ids[0])["state"] == "succeeded"
    assert _task(p, creds, ids[0])["result"] == {"ok": ids[0]}
    # A fail rides along too (judged as POST /tasks/outcomes judges it).
    (second,) = got["tasks"]
    fail = {"id": second["id"], "outcome": "fail", "error": "boom", "retryable": False}
    got = _carry(p, creds, [fail], n=5)
    assert got["outcomes"] == [{"id": ids[1], "status": 200, "state": "failed"}]
    assert [t["id"] for t in got["tasks"]] == [ids[2]]
    # Drained: the last outcome rides on a lease that finds nothing.
    got = _carry(p, creds, [_ack(got["tasks"][0])])
    assert got == {"tasks": [], "outcomes": [{"id": ids[2], "status": 200, "state": "succeeded"}]}
    # Without outcomes the answer is as before (no "outcomes" member).
    r = p.node(creds, "POST", "/tasks/lease", json={"max": 1})
    assert r.json() == {"tasks": []}


def test_a_resent_outcome_changes_nothing_and_the_lease_goes_ahead(
    node_platform: NodePlatform,
) -> None:
    # The answer to a lease carrying an ack was lost: the agent sends the ack again
    # on its next lease. Recorded once; the lease whose answer was lost comes back
    # after the visibility timeout, with the next attempt.
    p = node_platform
    creds = p.enroll()
    ids = _enqueue(p, creds, 2)
    (first,) = _lease(p, creds, 1)
    lost = _carry(p, creds, [_ack(first)])  # its answer never reaches the agent
    assert [t["id"] for t in lost["tasks"]] == [ids[1]]
    before = p.snapshot()
    again = _carry(p, creds, [{**_ack(first), "result": {"other": 1}}])
    assert again["outcomes"] == [
        {
            "id": ids[0],
            "status": 200,
            "state": "succeeded",
            "detail": "already succeeded; nothing changed",
        }
    ]
    assert again["tasks"] == []  # ids[1] is leased (by the lost answer), not offered twice
    assert p.snapshot() == before
    assert _task(p, creds, ids[0])["result"] == {"ok": ids[0]}
    p.clock.advance(NodeApiPolicy().visibility_timeout.total_seconds() + 1)
    (back,) = _lease(p, creds, 5)
    assert (back["id"], back["attempt"]) == (ids[1], 2)
    # The expired lease's outcome is refused now: the task is attempt 2's.
    stale = {"id": ids[1], "outcome": "ack", "attempt": 1}
    r = p.node(creds, "POST", "/tasks/lease", json={"max": 1, "outcomes": [stale]})
    assert r.status_code == 409, r.text
    assert "leased again (attempt 2)" in r.json()["detail"]
    got = _carry(p, creds, [_ack(back)])
    assert got["outcomes"][0]["state"] == "succeeded"
    assert _task(p, creds, ids[1])["attempts"] == 2


def test_a_late_ack_rides_on_a_lease_that_could_offer_its_task(
    node_platform: NodePlatform,
) -> None:
    # The lease expired (not yet re-leased): the task is offerable to the very lease
    # that carries its ack. The ack counts and the task is not leased again.
    p = node_platform
    creds = p.enroll()
    ids = _enqueue(p, creds, 2)
    (first,) = _lease(p, creds, 1)
    p.clock.advance(NodeApiPolicy().visibility_timeout.total_seconds() + 1)
    got = _carry(p, creds, [_ack(first)], n=5)
    assert got["outcomes"][0]["state"] == "succeeded"
    assert [t["id"] for t in got["tasks"]] == [ids[1]]
    t = _task(p, creds, ids[0])
    assert (t["state"], t["attempts"]) == ("succeeded", 1)


def test_a_refused_outcome_refuses_the_lease_and_changes_nothing(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    creds, other = p.enroll(), p.enroll()
    mine = _enqueue(p, creds, 3)
    (theirs,) = _enqueue(p, other, 1)
    leased = _lease(p, creds, 2)
    (their_task,) = _lease(p, other, 1)
    before = p.snapshot()
    cases = [
        # another node's task (leased by it)
        ([_ack(leased[0]), _ack(their_task)], 409, f"task {theirs} is not leased by this instance"),
        # a task queued, never leased
        ([_ack(leased[0]), {"id": mine[2], "outcome": "ack"}], 409, "queued, not leased"),
        # no such task
        ([{"id": "00000000-0000-4000-8000-000000000000", "outcome": "ack"}], 404, "not found"),
    ]
    for outcomes, status, words in cases:
        r = p.node(creds, "POST", "/tasks/lease", json={"max": 5, "outcomes": outcomes})
        assert r.status_code == status, r.text
        detail = r.json()["detail"]
        assert words in detail
        assert "none was recorded and nothing was leased" in detail
        assert [o["status"] for o in r.json()["outcomes"]] == [status]
        assert p.snapshot() == before
    # The good outcome alone goes through.
    got = _carry(p, creds, [_ack(leased[0])], n=5)
    assert [t["id"] for t in got["tasks"]] == [mine[2]]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"max": 1, "outcomes": [{"id": "a", "outcome": "ack"}] * 2}, "reported more than once"),
        (
            {"max": 1, "outcomes": [{"id": f"t{i}", "outcome": "ack"} for i in range(101)]},
            "at most 100 items",
        ),
        ({"max": 1, "outcomes": "ack"}, "valid list"),
        ({"max": 1, "outcomes": [{"id": "a", "outcome": "maybe"}]}, "'ack' or 'fail'"),
        ({"max": 1, "outcomes": [{"id": "a", "outcome": "ack", "attempt": "x"}]}, "integer"),
        ({"max": 1, "outcomes": [{"id": "a", "outcome": "ack", "task": 1}]}, "Extra inputs"),
        ({"max": 1, "outcomes": [{"outcome": "ack"}]}, "Field required"),
    ],
)
def test_bad_outcomes_in_a_lease_are_refused_with_a_reason(
    node_platform: NodePlatform, body: Doc, words: str
) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds, 1)
    before = p.snapshot()
    r = p.node(creds, "POST", "/tasks/lease", json=body)
    assert r.status_code == 422, r.text
    assert words in r.text
    assert p.snapshot() == before
    assert _task(p, creds, tid)["state"] == "queued"


def test_no_double_lease_with_concurrent_lessees_carrying_outcomes(
    node_platform: NodePlatform,
) -> None:
    """16 lessees of one instance, each lease carrying the previous one's ack (as the
    benchmark's like-for-like round): every task leased once and succeeded once."""
    p = node_platform
    creds = p.enroll()
    now = datetime.now(UTC)
    n_tasks = 240
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
            for i in range(n_tasks)
        )
        s.commit()
    engine, one = writer(p.engine), single_statement(p.engine, write=True)

    @contextmanager
    def begin() -> Iterator[Connection]:
        with engine.begin() as conn:
            yield conn

    @contextmanager
    def statement() -> Iterator[Connection]:
        with one.begin() as conn:
            yield conn

    fast = statement if p.engine.dialect.name == "postgresql" else None

    seen: list[str] = []
    answered: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    policy = NodeApiPolicy()
    start = threading.Barrier(16)

    def lessee() -> None:
        try:
            start.wait(10)
            held: list[tasks.Leased] = []
            for _ in range(n_tasks + 1):  # bounded: at most one task a lease
                sent = [tasks.Outcome(t.id, "ack", {}, attempt=t.attempt) for t in held]
                answers, held = tasks.report_and_lease(
                    begin, creds.instance_id, sent, 1, now=now, policy=policy, one_statement=fast
                )
                with lock:
                    answered.extend(a.status for a in answers)
                    seen.extend(t.id for t in held)
                if not held:
                    return
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=lessee) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    counts = Counter(seen)
    assert len(counts) == n_tasks
    assert max(counts.values()) == 1
    assert answered == [200] * n_tasks
    with Session(p.engine) as s:
        rows = Counter((t.state, t.attempts) for t in s.query(Task).all())
    assert rows == {("succeeded", 1): n_tasks}
