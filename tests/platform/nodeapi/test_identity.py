"""Issue 13, item 1: an instance has one live identity, and revocation cannot be outrun.

Which certificate may speak for an instance is on its row, read on every
request by every process; enroll, rotate and revoke change it under the
row's lock. ``other`` is a second app on the same database and node CA —
another platform process, as far as the database is concerned (the real
two-process races are in test_identity_processes.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from httpx import ASGITransport, AsyncClient, Response

from powernode.platform.api import node_api
from powernode.platform.app import create_app
from powernode.platform.pki import NodePeer
from powernode.platform.problems import AuthenticationError
from powernode.platform.services.nodeapi.identity import LiveIdentity, NodeApiPolicy, judge
from powernode.platform.services.nodeapi.ratelimit import Taken, take
from powernode.platform.settings import Settings
from tests.platform.nodeapi.conftest import (
    Creds,
    NodePlatform,
    _test_client_certificate,
    csr_pem,
)

LEASE = {"max": 1}


@pytest.fixture
def other(node_platform: NodePlatform, db_url: str, tmp_path: Path) -> Iterator[NodePlatform]:
    """A second platform app on the same database and data dir (so the same node CA)."""
    p = node_platform
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, migrate_on_start=False)
    app = create_app(settings, clock=p.clock, node_policy=NodeApiPolicy())
    app.dependency_overrides[node_api.client_certificate] = _test_client_certificate
    client = AsyncClient(transport=ASGITransport(app=app), base_url="http://other.test")
    portal: BlockingPortal = p.portal
    try:
        yield NodePlatform(app, portal, client, p.engine, p.provider, p.tokens, clock=p.clock)
    finally:
        portal.call(client.aclose)
        app.state.platform.engine.dispose()


def _rotate(p: NodePlatform, creds: Creds) -> tuple[Response, Creds | None]:
    key = Ed25519PrivateKey.generate()
    r = p.node(creds, "POST", "/certificates/rotate", json={"csr_pem": csr_pem(key)})
    new = Creds(creds.instance_id, key, r.json()["certificate_pem"]) if r.is_success else None
    return r, new


def _works(p: NodePlatform, creds: Creds) -> bool:
    r = p.node(creds, "POST", "/tasks/lease", json=LEASE)
    assert r.status_code in {200, 401}, r.text
    return r.status_code == 200


def _live(p: NodePlatform, instance_id: str) -> dict[str, str]:
    certs = p.call("GET", f"/node_instances/{instance_id}/certificates").json()["certificates"]
    return {c["serial"]: c["live"] for c in certs if c["live"] is not None}


def _refused(r: Response, *words: str) -> None:
    assert r.status_code == 401, r.text
    detail = r.json()["detail"]
    assert all(w in detail for w in words), detail


def test_reenrolling_retires_the_previous_certificate(node_platform: NodePlatform) -> None:
    # Was: one instance, two working identities.
    p = node_platform
    first = p.enroll()
    again = p.enroll(first.instance_id)
    assert _works(p, again)
    r = p.node(first, "POST", "/tasks/lease", json=LEASE)
    _refused(r, first.serial, "no longer the instance's", "enroll again")
    _refused(p.node(first, "POST", "/status/heartbeat", json={}), "no longer the instance's")


def test_a_rotated_certificate_replaces_the_old_one_at_its_first_use(
    node_platform: NodePlatform, other: NodePlatform
) -> None:
    p = node_platform
    old = p.enroll()
    r, new = _rotate(p, old)
    assert r.status_code == 200 and new is not None
    # The answer may be lost on the way: until the new one is used, the old one works.
    assert _works(p, old) and _works(other, old)
    assert _live(p, old.instance_id) == {old.serial: "current", new.serial: "staged"}
    assert _works(other, new)  # first use, in the other process
    assert _live(p, old.instance_id) == {new.serial: "current"}
    _refused(p.node(old, "POST", "/tasks/lease", json=LEASE), "no longer the instance's")
    _refused(other.node(old, "POST", "/tasks/lease", json=LEASE), "no longer the instance's")
    assert _works(p, new)


def test_a_rotation_never_used_is_replaced_by_the_next(node_platform: NodePlatform) -> None:
    p = node_platform
    p.state.node_policy = NodeApiPolicy(rotate_min_interval=timedelta(0))
    old = p.enroll()
    _, lost = _rotate(p, old)  # the node never saw this answer
    _, kept = _rotate(p, old)
    assert lost is not None and kept is not None
    _refused(p.node(lost, "POST", "/tasks/lease", json=LEASE), "no longer the instance's")
    assert _works(p, kept)
    assert not _works(p, old)


def test_rotating_with_a_certificate_revoked_through_another_process_is_refused(
    node_platform: NodePlatform, other: NodePlatform
) -> None:
    # Was: 200 and a new certificate that kept working on both processes.
    p = node_platform
    creds = p.enroll()
    assert _works(other, creds)
    r = p.call("POST", f"/node_instances/{creds.instance_id}/certificates/revoke")
    assert r.json() == {"revoked": [creds.serial]}
    before = p.snapshot()
    r, new = _rotate(other, creds)
    _refused(r, creds.serial, "revoked")
    assert new is None
    assert p.snapshot() == before
    assert not _works(other, creds) and not _works(p, creds)


def test_a_revocation_covers_a_rotation_that_committed_first(
    node_platform: NodePlatform, other: NodePlatform
) -> None:
    p = node_platform
    creds = p.enroll()
    r, new = _rotate(other, creds)
    assert r.status_code == 200 and new is not None
    revoked = p.call("POST", f"/node_instances/{creds.instance_id}/certificates/revoke").json()
    assert sorted(revoked["revoked"]) == sorted([creds.serial, new.serial])
    assert _live(p, creds.instance_id) == {}
    for who in (p, other):
        _refused(who.node(new, "POST", "/tasks/lease", json=LEASE), "revoked")
        _refused(who.node(creds, "POST", "/tasks/lease", json=LEASE), "revoked")
    # Enrolling again with a new token gives the instance its identity back.
    again = p.enroll(creds.instance_id)
    assert _works(other, again)


def test_rotation_is_rate_limited_per_node_across_processes(
    node_platform: NodePlatform, other: NodePlatform
) -> None:
    p = node_platform  # the default: one rotation per 60 s
    creds = p.enroll()
    r, new = _rotate(p, creds)
    assert r.status_code == 200 and new is not None
    p.clock.advance(20)
    assert _works(p, new)  # its first use makes it current (a write of its own)
    before = p.snapshot()
    r, _ = _rotate(other, new)
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "40"
    body = r.json()
    assert body["retry_after"] == 40 and body["type"].endswith("/rate-limited")
    assert "one rotation per 60 s" in body["detail"] and "retry after 40 s" in body["detail"]
    assert p.snapshot() == before
    p.clock.advance(40)
    r, _ = _rotate(other, new)
    assert r.status_code == 200, r.text


def _events(n: int, at: datetime) -> dict[str, object]:
    one = {"kind": "x.y", "severity": "info", "occurred_at": at.isoformat(), "payload": {}}
    return {"events": [{**one, "id": str(uuid.uuid4())} for _ in range(n)]}


def test_event_intake_is_rate_limited_per_node_across_processes(
    node_platform: NodePlatform, other: NodePlatform
) -> None:
    p = node_platform
    policy = NodeApiPolicy(events_per_second=2.0, events_burst=10.0)
    p.state.node_policy = other.state.node_policy = policy
    a, b = p.enroll(), p.enroll()
    assert p.node(a, "POST", "/events", json=_events(6, p.clock())).json()["accepted"] == 6
    before = p.snapshot()
    r = other.node(a, "POST", "/events", json=_events(5, p.clock()))  # 4 tokens left
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"  # 1 token short at 2/s: 0.5 s, rounded up
    assert "2/s with bursts of 10" in r.json()["detail"] and "nothing was stored" in r.text
    assert p.snapshot() == before
    # Another node has its own budget.
    assert other.node(b, "POST", "/events", json=_events(10, p.clock())).status_code == 200
    p.clock.advance(0.5)
    assert other.node(a, "POST", "/events", json=_events(5, p.clock())).status_code == 200


NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tokens", "elapsed", "cost", "expected"),
    [
        pytest.param(10.0, 0.0, 10.0, Taken(0.0), id="the-whole-burst"),
        pytest.param(0.0, 2.0, 5.0, Taken(4.0, 0.5), id="short-refused-with-wait"),
        pytest.param(0.0, 100.0, 1.0, Taken(9.0), id="refill-capped-at-burst"),
        pytest.param(5.0, -30.0, 1.0, Taken(4.0), id="clock-backwards-refills-nothing"),
    ],
)
def test_token_bucket(tokens: float, elapsed: float, cost: float, expected: Taken) -> None:
    since = NOW - timedelta(seconds=elapsed)
    assert take(tokens, since, NOW, cost=cost, rate=2.0, burst=10.0) == expected


PEER = NodePeer("3b7e1a8e-9f7c-4d3e-8a55-1f2e3d4c5b6a", "aa", "f" * 64, NOW)


@pytest.mark.parametrize(
    ("live", "revoked", "words"),
    [
        pytest.param(None, None, "no longer exists", id="instance-gone"),
        pytest.param(LiveIdentity("terminated", "aa", None), None, "terminated", id="ended"),
        pytest.param(LiveIdentity("running", None, None), NOW, "revoked", id="revoked"),
        pytest.param(LiveIdentity("running", None, None), None, "revoked", id="revoked-no-row"),
        pytest.param(LiveIdentity("running", "bb", None), None, "no longer", id="superseded"),
    ],
)
def test_judge_refuses(live: LiveIdentity | None, revoked: datetime | None, words: str) -> None:
    with pytest.raises(AuthenticationError, match=words):
        judge(PEER, live, lambda _serial: revoked)


def test_judge_accepts_the_current_and_the_staged_certificate() -> None:
    assert judge(PEER, LiveIdentity("running", "aa", "bb"), lambda _s: None) is False
    assert judge(PEER, LiveIdentity("running", "bb", "aa"), lambda _s: None) is True
