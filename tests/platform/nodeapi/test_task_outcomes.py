"""POST /node_api/tasks/outcomes: several acks/fails in one transaction, each answered alone."""

from __future__ import annotations

import pytest

from tests.platform.nodeapi.conftest import Creds, NodePlatform
from tests.platform.nodeapi.test_tasks import _enqueue, _lease, _task

MISSING = "00000000-0000-4000-8000-000000000000"


def _report(
    p: NodePlatform, creds: Creds, outcomes: list[dict[str, object]]
) -> list[dict[str, object]]:
    r = p.node(creds, "POST", "/tasks/outcomes", json={"outcomes": outcomes})
    assert r.status_code == 200, r.text
    answers: list[dict[str, object]] = r.json()["outcomes"]
    return answers


def test_acks_and_fails_in_one_batch_each_recorded(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    a, b, c = _enqueue(p, creds, 3, max_attempts=3)
    _lease(p, creds)
    answers = _report(
        p,
        creds,
        [
            {"id": a, "outcome": "ack", "result": {"n": 1}},
            {"id": b, "outcome": "fail", "error": "flaky", "retryable": True},
            {"id": c, "outcome": "fail", "error": "broken"},
        ],
    )
    assert [(x["id"], x["status"], x["state"]) for x in answers] == [
        (a, 200, "succeeded"),
        (b, 200, "queued"),
        (c, 200, "failed"),
    ]
    assert _task(p, creds, a)["result"] == {"n": 1}
    assert (_task(p, creds, b)["state"], _task(p, creds, b)["error"]) == ("queued", "flaky")
    assert (_task(p, creds, c)["state"], _task(p, creds, c)["error"]) == ("failed", "broken")
    p.clock.advance(9)
    assert _lease(p, creds) == []  # the retry backs off 10 s after the first attempt
    p.clock.advance(1)
    assert [(t["id"], t["attempt"]) for t in _lease(p, creds)] == [(b, 2)]


def test_a_refused_outcome_changes_nothing_and_does_not_stop_the_others(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    creds, other = p.enroll(), p.enroll()
    (mine,) = _enqueue(p, creds)
    (theirs,) = _enqueue(p, other)
    (queued,) = _enqueue(p, creds)  # never leased
    _lease(p, creds, 1)
    _lease(p, other)
    before = _task(p, other, theirs), _task(p, creds, queued)
    answers = _report(
        p,
        creds,
        [
            {"id": MISSING, "outcome": "ack"},
            {"id": theirs, "outcome": "ack"},
            {"id": queued, "outcome": "fail", "error": "x"},
            {"id": mine, "outcome": "ack", "result": {"ok": True}},
        ],
    )
    assert [x["status"] for x in answers] == [404, 409, 409, 200]
    assert "not found" in str(answers[0]["detail"])
    assert "not leased by this instance" in str(answers[1]["detail"])
    assert "queued, not leased" in str(answers[2]["detail"])
    assert (_task(p, other, theirs), _task(p, creds, queued)) == before
    assert _task(p, creds, mine)["state"] == "succeeded"


def test_an_outcome_is_recorded_once_even_twice_in_a_batch(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    (tid,) = _enqueue(p, creds)
    _lease(p, creds)
    answers = _report(
        p,
        creds,
        [
            {"id": tid, "outcome": "ack", "result": {"first": 1}},
            {"id": tid, "outcome": "fail", "error": "second"},
        ],
    )
    assert [(x["status"], x["state"]) for x in answers] == [(200, "succeeded"), (200, "succeeded")]
    before = p.snapshot()
    (again,) = _report(p, creds, [{"id": tid, "outcome": "fail", "error": "late"}])
    assert (again["status"], again["state"]) == (200, "succeeded")
    assert "nothing changed" in str(again["detail"])
    assert p.snapshot() == before
    t = _task(p, creds, tid)
    assert (t["result"], t["error"], t["attempts"]) == ({"first": 1}, None, 1)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"outcomes": []}, "outcomes"),
        ({"outcomes": [{"id": "x", "outcome": "ack"}] * 101}, "outcomes"),
        ({"outcomes": [{"id": "x", "outcome": "done"}]}, "outcome"),
        ({"outcomes": [{"id": "", "outcome": "ack"}]}, "id"),
        ({"outcomes": [{"id": "x", "outcome": "fail", "error": "e" * 8193}]}, "error"),
        ({"outcomes": [{"id": "x", "outcome": "ack", "extra": 1}]}, "extra"),
    ],
    ids=["empty", "too-many", "bad-verb", "empty-id", "long-error", "unknown-field"],
)
def test_bad_batches_are_422_and_change_nothing(
    node_platform: NodePlatform, body: dict[str, object], where: str
) -> None:
    p = node_platform
    creds = p.enroll()
    _enqueue(p, creds)
    _lease(p, creds)
    before = p.snapshot()
    r = p.node(creds, "POST", "/tasks/outcomes", json=body)
    assert r.status_code == 422, r.text
    assert where in r.text
    assert p.snapshot() == before


def test_outcomes_need_the_node_certificate(node_platform: NodePlatform) -> None:
    p = node_platform
    r = p.node(None, "POST", "/tasks/outcomes", json={"outcomes": [{"id": "x", "outcome": "ack"}]})
    assert r.status_code == 401
