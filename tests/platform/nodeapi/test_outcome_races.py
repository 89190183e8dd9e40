"""Issue 13, item 5: concurrent outcomes of one task are recorded once, on both databases.

The outcome path reads the task, judges it, then writes. On SQLite the read
used to run outside any transaction (pysqlite begins one only at the first
write, and ``FOR UPDATE`` does not exist there), so a second outcome, or a
lease giving the task again, could slip in between: two accepted outcomes,
or an outcome recorded for a lease that had expired and been given again.
Now every unit of work is a write transaction from its first statement on
(``BEGIN IMMEDIATE``, db/session.py), as the row lock is on PostgreSQL.

The window is widened on purpose: the test sleeps 0.1 s right after the
outcome's read of the task (an engine event), then sends the competing
request — without the write transaction, every round races.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from httpx import Response
from sqlalchemy import event

from tests.platform.nodeapi.conftest import CERT_HEADER, NODE, Creds, NodePlatform
from tests.platform.nodeapi.test_tasks import _enqueue, _lease

ROUNDS = 30
_OUTCOME_READ = "SELECT tasks.id, tasks.instance_id, tasks.state, tasks.lease_owner"


@contextmanager
def _slow_outcome_read(p: NodePlatform, seconds: float = 0.1) -> Iterator[None]:
    def after(*args: Any) -> None:
        statement = args[2]
        if statement.startswith(_OUTCOME_READ):
            time.sleep(seconds)

    engine = p.state.engine
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(engine, "after_cursor_execute", after)


def _together(
    p: NodePlatform, creds: Creds, first: dict[str, Any], second: dict[str, Any]
) -> tuple[Response, Response]:
    """Send ``first``, then ``second`` 30 ms later, concurrently; both answers."""
    headers = {CERT_HEADER: creds.der.hex()}
    answers: dict[str, Response] = {}

    async def send(name: str, req: dict[str, Any], delay: float) -> None:
        await anyio.sleep(delay)
        answers[name] = await p.client.request(
            req["method"], NODE + req["path"], json=req["json"], headers=headers
        )

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "first", first, 0.0)
            tg.start_soon(send, "second", second, 0.03)

    p.portal.call(both)
    return answers["first"], answers["second"]


def _outcome(tid: str, result: dict[str, Any], attempt: int) -> dict[str, Any]:
    body = {"outcomes": [{"id": tid, "outcome": "ack", "result": result, "attempt": attempt}]}
    return {"method": "POST", "path": "/tasks/outcomes", "json": body}


@pytest.mark.slow
def test_two_outcomes_of_one_lease_are_recorded_once(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    recorded_twice = 0
    with _slow_outcome_read(p):
        for _ in range(ROUNDS):
            (tid,) = _enqueue(p, creds)
            assert [t["id"] for t in _lease(p, creds, 1)] == [tid]
            a, b = _together(
                p, creds, _outcome(tid, {"who": "a"}, 1), _outcome(tid, {"who": "b"}, 1)
            )
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            answers = [a.json()["outcomes"][0], b.json()["outcomes"][0]]
            assert all(x["status"] == 200 and x["state"] == "succeeded" for x in answers)
            recorded = [x for x in answers if "detail" not in x]
            recorded_twice += len(recorded) > 1
            assert len(recorded) >= 1
    assert recorded_twice == 0, f"{recorded_twice} of {ROUNDS} tasks took two outcomes"


@pytest.mark.slow
def test_an_outcome_racing_a_new_lease_is_never_recorded_for_the_expired_attempt(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    creds = p.enroll()
    stale_recorded = 0
    lease = {"method": "POST", "path": "/tasks/lease", "json": {"max": 1}}
    with _slow_outcome_read(p):
        for _ in range(ROUNDS):
            (tid,) = _enqueue(p, creds, max_attempts=5)
            assert [t["attempt"] for t in _lease(p, creds, 1)] == [1]
            p.clock.advance(301)  # attempt 1's lease has expired: the task is offerable
            out, leased = _together(p, creds, _outcome(tid, {"attempt": 1}, 1), lease)
            assert out.status_code == leased.status_code == 200, (out.text, leased.text)
            answer = out.json()["outcomes"][0]
            again = [t for t in leased.json()["tasks"] if t["id"] == tid]
            if answer["status"] == 200:
                assert answer["state"] == "succeeded"
                stale_recorded += bool(again)  # recorded, yet given to attempt 2
            else:
                assert answer["status"] == 409 and again, (answer, again)
                assert "leased again (attempt 2)" in answer["detail"]
            if again:  # finish attempt 2, so the next round's lease offers only its task
                r = p.node(creds, "POST", f"/tasks/{tid}/ack", json={"result": {}, "attempt": 2})
                assert r.status_code == 200, r.text
    assert stale_recorded == 0, f"{stale_recorded} of {ROUNDS} outcomes of expired attempts"


@pytest.mark.slow  # waits out busy_timeout (5 s)
def test_a_write_lock_held_past_busy_timeout_is_a_503_with_retry_after(
    node_platform: NodePlatform, db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's single write lock")
    p = node_platform
    creds = p.enroll()
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        r = p.node(creds, "POST", "/tasks/lease", json={"max": 1})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert "nothing was changed" in r.json()["detail"]
    assert p.node(creds, "POST", "/tasks/lease", json={"max": 1}).status_code == 200
