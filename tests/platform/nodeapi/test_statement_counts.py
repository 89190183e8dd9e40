"""The node API's hot paths, counted in SQL statements per request (issue 19 line 3).

A ``before_cursor_execute`` listener on the app's engine counts every statement
a request sends (``BEGIN`` excluded: SQLite's is a statement, PostgreSQL's is
implicit). The counts are pinned: a new read-modify-write or an N+1 makes this
test fail rather than creep in. Each route is counted twice, with a small and a
larger batch, so a per-item statement (an N+1) shows as a difference.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.platform.nodeapi.conftest import Creds, NodePlatform
from tests.platform.nodeapi.test_modules import _stack
from tests.platform.nodeapi.test_tasks import _enqueue

Sent = tuple[str, Any]  # Any: the DBAPI parameters (a mapping, a sequence, or a list of them)


@contextmanager
def counting(p: NodePlatform) -> Iterator[list[Sent]]:
    seen: list[Sent] = []

    def count(  # Any: DBAPI objects
        _c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool
    ) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            # executemany sends a list of parameter sets (insertmanyvalues one, flattened)
            batch = many and isinstance(params, list | tuple) and params
            seen.append((statement, params[0] if batch else params))

    engine = p.state.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _count(p: NodePlatform, go: Callable[[], None]) -> list[Sent]:
    with counting(p) as seen:
        go()
    return list(seen)


def _warm(p: NodePlatform, creds: Creds) -> None:
    # The first request of a certificate reads its identity; later ones hit the cache.
    assert p.node(creds, "GET", "/modules").status_code == 200


# Pinned statements per request, after identity is cached (both databases).
# Every request starts with the identity read (the certificate's serial against the
# instance row: revocation and rotation take effect at the next request, batched with
# the requests waiting, services/nodeapi/identity_batch.py).
PINNED = {
    "heartbeat": 1,  # identity; the report is buffered
    "heartbeat flush": 3,  # per flush, whatever the number of instances: ids, UPDATE, upsert
    "lease": 2,  # identity; one UPDATE … RETURNING takes the tasks
    "outcomes": 3,  # identity; tasks FOR UPDATE; one executemany UPDATE
    # identity; PostgreSQL: the acks and the lease, one statement (WITH acked AS (UPDATE …),
    # leased AS (UPDATE …) SELECT …) for any number of acks. SQLite: below.
    "lease carrying 1 ack": 2,
    "lease carrying 4 acks": 2,
    # identity; the rate bucket's upsert (refill and take in SQL); one INSERT that
    # reads the node id itself
    "events": 3,
    # identity; instance + node + template; rollouts held back; fingerprint (2); then,
    # the cache hit, versions + modules and assignment metadata, one each for any count
    "desired set": 7,
}


def hot_requests(p: NodePlatform) -> dict[str, list[Sent]]:
    """Each hot request once, on a platform with two modules assigned; its statements."""
    _stack(p)
    creds = p.enroll()
    _warm(p, creds)
    counts: dict[str, list[Sent]] = {}

    body = {"boot_id": "b", "agent_version": "1", "load": [0.1, 0.2, 0.3]}
    p.state.heartbeats.flush()
    counts["heartbeat"] = _count(
        p, lambda: p.node(creds, "POST", "/status/heartbeat", json=body).raise_for_status()
    )
    others = [p.enroll(), p.enroll()]
    for c in others:  # three instances' heartbeats: still one flush of constant statements
        p.node(c, "POST", "/status/heartbeat", json=body).raise_for_status()
    assert p.state.heartbeats.pending() == 3
    counts["heartbeat flush"] = _count(p, lambda: p.state.heartbeats.flush() and None)

    _enqueue(p, creds, 4)
    leased: list[dict[str, Any]] = []

    def lease() -> None:
        r = p.node(creds, "POST", "/tasks/lease", json={"max": 4})
        r.raise_for_status()
        leased.extend(r.json()["tasks"])

    counts["lease"] = _count(p, lease)
    assert len(leased) == 4

    outcomes = [
        {"id": t["id"], "outcome": "ack", "result": {}, "attempt": t["attempt"]} for t in leased
    ]
    counts["outcomes"] = _count(
        p,
        lambda: p.node(
            creds, "POST", "/tasks/outcomes", json={"outcomes": outcomes}
        ).raise_for_status(),
    )

    # A lease carrying the previous lease's acks (what the agent sends on its next beat).
    _enqueue(p, creds, 8)
    held: list[dict[str, Any]] = []

    def carrying(n: int) -> Callable[[], None]:
        def go() -> None:
            acks = [{"id": t["id"], "outcome": "ack", "attempt": t["attempt"]} for t in held]
            r = p.node(creds, "POST", "/tasks/lease", json={"max": n, "outcomes": acks})
            r.raise_for_status()
            assert [a["status"] for a in r.json().get("outcomes", [])] == [200] * len(acks)
            held[:] = r.json()["tasks"]

        return go

    carrying(1)()
    counts["lease carrying 1 ack"] = _count(p, carrying(4))
    counts["lease carrying 4 acks"] = _count(p, carrying(1))

    def ev() -> list[dict[str, object]]:
        return [
            {"id": str(uuid.uuid4()), "kind": "test.event", "severity": "info",
             "occurred_at": "2026-05-01T12:00:00Z", "payload": {}}
            for _ in range(5)
        ]  # fmt: skip

    # The first batch creates the instance's rate bucket; the steady state is counted.
    p.node(creds, "POST", "/events", json={"events": ev()}).raise_for_status()
    counts["events"] = _count(
        p, lambda: p.node(creds, "POST", "/events", json={"events": ev()}).raise_for_status()
    )
    p.node(creds, "GET", "/modules").raise_for_status()
    counts["desired set"] = _count(p, lambda: p.node(creds, "GET", "/modules").raise_for_status())
    return counts


# SQLite has no UPDATE in a WITH: identity; tasks (the acks' rows); one executemany
# UPDATE; the lease — one transaction all the same.
PINNED_SQLITE = {"lease carrying 1 ack": 4, "lease carrying 4 acks": 4}


def test_statements_per_hot_request(node_platform: NodePlatform) -> None:
    counts = hot_requests(node_platform)
    got = {k: len(v) for k, v in counts.items()}
    detail = "\n".join(f"{k}: {s[:160]}" for k, v in counts.items() for s, _ in v)
    print(got, "\n" + detail)
    sqlite = node_platform.state.engine.dialect.name == "sqlite"
    assert got == (PINNED | PINNED_SQLITE if sqlite else PINNED), detail
