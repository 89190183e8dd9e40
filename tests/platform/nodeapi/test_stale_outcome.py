"""An outcome for a lease that expired and was given again is refused; the current one counts."""

from __future__ import annotations

import pytest

from tests.platform.nodeapi.conftest import Creds, NodePlatform
from tests.platform.nodeapi.test_tasks import _enqueue, _lease, _task


def _re_leased(p: NodePlatform, creds: Creds) -> str:
    """A task leased (attempt 1), expired after 300 s and leased again (attempt 2)."""
    (tid,) = _enqueue(p, creds, max_attempts=3)
    assert [t["attempt"] for t in _lease(p, creds)] == [1]
    p.clock.advance(300)
    assert [(t["id"], t["attempt"]) for t in _lease(p, creds)] == [(tid, 2)]
    return tid


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("ack", {"result": {"old": True}, "attempt": 1}),
        ("fail", {"error": "old", "retryable": False, "attempt": 1}),
    ],
)
def test_an_outcome_of_the_expired_lease_is_refused(
    node_platform: NodePlatform, verb: str, body: dict[str, object]
) -> None:
    p = node_platform
    creds = p.enroll()
    tid = _re_leased(p, creds)
    before = p.snapshot()
    r = p.node(creds, "POST", f"/tasks/{tid}/{verb}", json=body)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "attempt 1" in detail and "leased again (attempt 2)" in detail
    assert "nothing was recorded" in detail
    assert p.snapshot() == before
    # The current lease's outcome is the one that counts.
    r = p.node(creds, "POST", f"/tasks/{tid}/ack", json={"result": {"new": 1}, "attempt": 2})
    assert r.status_code == 200 and r.json()["state"] == "succeeded"
    assert _task(p, creds, tid)["result"] == {"new": 1}


def test_in_a_batch_the_stale_one_alone_is_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    stale = _re_leased(p, creds)
    (fresh,) = _enqueue(p, creds)
    assert [t["id"] for t in _lease(p, creds)] == [fresh]
    r = p.node(
        creds,
        "POST",
        "/tasks/outcomes",
        json={
            "outcomes": [
                {"id": stale, "outcome": "ack", "result": {"old": True}, "attempt": 1},
                {"id": fresh, "outcome": "ack", "result": {"ok": 1}, "attempt": 1},
            ]
        },
    )
    assert r.status_code == 200, r.text
    answers = r.json()["outcomes"]
    assert [(a["id"], a["status"], a["state"]) for a in answers] == [
        (stale, 409, "leased"),
        (fresh, 200, "succeeded"),
    ]
    assert "leased again (attempt 2)" in answers[0]["detail"]
    assert _task(p, creds, stale)["state"] == "leased"
    assert _task(p, creds, stale)["result"] is None


def test_an_outcome_naming_no_attempt_is_judged_by_the_lessee_alone(
    node_platform: NodePlatform,
) -> None:
    # What agents that predate the field send: accepted as before.
    p = node_platform
    creds = p.enroll()
    tid = _re_leased(p, creds)
    r = p.node(creds, "POST", f"/tasks/{tid}/ack", json={"result": {}})
    assert r.status_code == 200 and r.json()["state"] == "succeeded"


@pytest.mark.parametrize("attempt", [0, -1, 1001, "one", 1.5])
def test_a_bad_attempt_is_a_422_naming_the_field(
    node_platform: NodePlatform, attempt: object
) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds)
    _lease(p, creds)
    before = p.snapshot()
    r = p.node(creds, "POST", f"/tasks/{tid}/ack", json={"result": {}, "attempt": attempt})
    assert r.status_code == 422, r.text
    assert "attempt" in r.text
    assert p.snapshot() == before
