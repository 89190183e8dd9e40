"""Events deduplicated by id; heartbeats buffered and written in one batch."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tests.platform.nodeapi.conftest import NodePlatform

DIGEST = "sha256:" + "ab" * 32


def _event(p: NodePlatform, kind: str = "task.completed", **kw: object) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "kind": kind,
        "severity": "info",
        "occurred_at": p.clock().isoformat(),
        "payload": {"n": 1},
        **kw,
    }


def test_events_are_stored_once_by_id(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    batch = [_event(p) for _ in range(5)]
    r = p.node(creds, "POST", "/events", json={"events": batch})
    assert r.json() == {"accepted": 5, "duplicates": 0}
    before = p.snapshot()
    again = [*batch[:3], _event(p, "system.cert.rotation_failed", severity="critical")]
    r = p.node(creds, "POST", "/events", json={"events": again})
    assert r.json() == {"accepted": 1, "duplicates": 3}
    assert p.count("fleet_events") == len(before["fleet_events"]) + 1
    stored = p.call("GET", f"/node_instances/{creds.instance_id}/events?limit=1000").json()
    mine = [e for e in stored["events"] if e["agent_event_id"]]
    assert sorted(e["agent_event_id"] for e in mine) == sorted(
        str(e["id"]) for e in batch + again[3:]
    )


def test_same_id_twice_in_one_batch_counts_once(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    e = _event(p)
    r = p.node(creds, "POST", "/events", json={"events": [e, e]})
    assert r.json() == {"accepted": 1, "duplicates": 1}


def test_two_nodes_may_use_the_same_event_id(node_platform: NodePlatform) -> None:
    # Dedup is per instance: node A cannot suppress node B's events by guessing ids.
    p = node_platform
    a, b = p.enroll(), p.enroll()
    e = _event(p)
    assert p.node(a, "POST", "/events", json={"events": [e]}).json()["accepted"] == 1
    assert p.node(b, "POST", "/events", json={"events": [e]}).json()["accepted"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "not-a-uuid"}, "id"),
        ({"kind": "NoDots"}, "kind"),
        ({"severity": "fatal"}, "severity"),
        ({"occurred_at": "2026-05-01T12:00:00"}, "occurred_at"),  # no offset
    ],
    ids=["id", "kind", "severity", "naive-time"],
)
def test_bad_event_refuses_the_batch(
    node_platform: NodePlatform, change: dict[str, object], field: str
) -> None:
    p = node_platform
    creds = p.enroll()
    before = p.snapshot()
    r = p.node(creds, "POST", "/events", json={"events": [_event(p), _event(p, **change)]})
    assert r.status_code == 422
    assert field in r.json()["detail"]
    assert p.snapshot() == before


def test_more_than_500_events_are_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    before = p.snapshot()
    r = p.node(creds, "POST", "/events", json={"events": [_event(p) for _ in range(501)]})
    assert r.status_code == 422
    assert p.snapshot() == before


def test_heartbeats_coalesce_and_flush_in_one_batch(node_platform: NodePlatform) -> None:
    p = node_platform
    a, b = p.enroll(), p.enroll()
    p.state.heartbeats.flush()
    for i in range(3):
        body = {
            "boot_id": f"boot-{i}",
            "agent_version": "1.2.3",
            "running_module_digests": {"redis": DIGEST},
            "mounts": {"generation": i},
            "load": [0.1, 0.2, 0.3],
            "mem": {"total": 100, "available": 50},
        }
        assert p.node(a, "POST", "/status/heartbeat", json=body).status_code == 200
        p.clock.advance(1)
    r = p.node(b, "POST", "/status/heartbeat", json={"boot_id": "bb"})
    assert r.json()["server_time"] == p.clock().isoformat().replace("+00:00", "Z")
    assert p.state.heartbeats.pending() == 2
    inst = p.call("GET", f"/node_instances/{a.instance_id}").json()["instance"]
    assert inst["last_heartbeat_at"] is None  # buffered, not written yet
    assert p.state.heartbeats.flush() == 2  # three of A's coalesced into one
    inst = p.call("GET", f"/node_instances/{a.instance_id}").json()["instance"]
    assert inst["running_module_digests"] == {"redis": DIGEST}
    assert inst["last_heartbeat_at"].startswith("2026-05-01T12:00:02")
    with p.engine.connect() as c:
        rows = c.execute(
            text("SELECT instance_id, boot_id, agent_version FROM node_agent_status")
        ).all()
    assert sorted(tuple(r) for r in rows) == sorted(
        [(a.instance_id, "boot-2", "1.2.3"), (b.instance_id, "bb", "")]
    )
    assert p.state.heartbeats.flush() == 0


def test_heartbeat_of_a_deleted_instance_does_not_break_the_batch(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    a, b = p.enroll(), p.enroll()
    p.node(a, "POST", "/status/heartbeat", json={"boot_id": "x"})
    p.node(b, "POST", "/status/heartbeat", json={"boot_id": "y"})
    with p.engine.begin() as c:
        c.execute(text("DELETE FROM node_instances WHERE id = :i"), {"i": a.instance_id})
    assert p.state.heartbeats.flush() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"running_module_digests": {"redis": "md5:abc"}},
        {"boot_id": "x" * 65},
        {"load": [1, 2, 3, 4]},
    ],
    ids=["digest", "boot-id", "load"],
)
def test_bad_heartbeat_is_refused(node_platform: NodePlatform, body: dict[str, object]) -> None:
    p = node_platform
    creds = p.enroll()
    assert p.node(creds, "POST", "/status/heartbeat", json=body).status_code == 422
    assert p.state.heartbeats.pending() == 0
