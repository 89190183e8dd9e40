"""The node API's lean route handler (node_api.NodeRoute) answers exactly as
FastAPI's own handler for the route: same status, headers that matter and body,
for good requests and for every kind of bad one.

FastAPI's handler is forced by overriding ``get_state`` with itself (the lean
handler steps aside when the dependencies it resolves by hand are overridden).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from powernode.platform.api.deps import get_state
from tests.platform.nodeapi.conftest import CERT_HEADER, NODE, Creds, NodePlatform
from tests.platform.nodeapi.test_tasks import _enqueue

JSON = {"content-type": "application/json"}


def _event(**over: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "kind": "test.event",
        "severity": "info",
        "occurred_at": "2026-05-01T12:00:00Z",
        "payload": {},
    } | over


CASES: dict[str, tuple[str, str, bytes | None, dict[str, str]]] = {
    "heartbeat": ("POST", "/status/heartbeat", b'{"boot_id": "b", "load": [0.1]}', JSON),
    "heartbeat-extra-field": ("POST", "/status/heartbeat", b'{"new": 1}', JSON),
    "heartbeat-bad-field": ("POST", "/status/heartbeat", b'{"load": "high"}', JSON),
    "heartbeat-not-json": ("POST", "/status/heartbeat", b"{boot", JSON),
    "heartbeat-a-list": ("POST", "/status/heartbeat", b"[]", JSON),
    "heartbeat-no-body": ("POST", "/status/heartbeat", None, JSON),
    "heartbeat-no-content-type": ("POST", "/status/heartbeat", b"{}", {}),
    "heartbeat-text-plain": ("POST", "/status/heartbeat", b"{}", {"content-type": "text/plain"}),
    "heartbeat-charset": (
        "POST",
        "/status/heartbeat",
        b"{}",
        {"content-type": "application/json; charset=utf-8"},
    ),
    "lease-empty": ("POST", "/tasks/lease", b'{"max": 3}', JSON),
    "lease-max-0": ("POST", "/tasks/lease", b'{"max": 0}', JSON),
    "lease-unknown-field": ("POST", "/tasks/lease", b'{"max": 1, "min": 1}', JSON),
    "ack-unknown-task": ("POST", "/tasks/nope/ack", b"{}", JSON),
    "ack-bad-attempt": ("POST", "/tasks/nope/ack", b'{"attempt": 0}', JSON),
    "fail-unknown-task": ("POST", "/tasks/nope/fail", b'{"error": "x"}', JSON),
    "outcomes-empty": ("POST", "/tasks/outcomes", b'{"outcomes": []}', JSON),
    "events-bad-kind": ("POST", "/events", b'{"events": [{"kind": "X"}]}', JSON),
    "modules": ("GET", "/modules", None, {}),
}


def _send(
    p: NodePlatform, creds: Creds | None, case: tuple[str, str, bytes | None, dict[str, str]]
) -> tuple[int, str, dict[str, str]]:
    method, path, body, headers = case
    headers = dict(headers)
    if creds is not None:
        headers[CERT_HEADER] = creds.der.hex()
    r = p.raw(method, NODE + path, content=body, headers=headers)
    kept = {k: r.headers[k] for k in ("content-type", "retry-after") if k in r.headers}
    return r.status_code, r.text, kept


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("authenticated", [True, False], ids=["cert", "no-cert"])
def test_lean_and_fastapi_answer_alike(
    node_platform: NodePlatform, name: str, authenticated: bool
) -> None:
    p = node_platform
    creds = p.enroll() if authenticated else None
    lean = _send(p, creds, CASES[name])
    p.app.dependency_overrides[get_state] = get_state
    try:
        full = _send(p, creds, CASES[name])
    finally:
        del p.app.dependency_overrides[get_state]
    assert lean == full


def test_lean_ack_of_a_held_task_and_its_repeat_answer_as_fastapi_does(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    creds = p.enroll()
    answers = []
    for forced in (False, True):
        (tid,) = _enqueue(p, creds)
        leased = p.node(creds, "POST", "/tasks/lease", json={"max": 1}).json()["tasks"]
        assert [t["id"] for t in leased] == [tid]
        if forced:
            p.app.dependency_overrides[get_state] = get_state
        try:
            body = {"result": {"ok": True}, "attempt": leased[0]["attempt"]}
            first = p.node(creds, "POST", f"/tasks/{tid}/ack", json=body)
            again = p.node(creds, "POST", f"/tasks/{tid}/ack", json=body)
            other = p.node(p.enroll(), "POST", f"/tasks/{tid}/ack", json={})
        finally:
            p.app.dependency_overrides.pop(get_state, None)
        answers.append(
            [
                (
                    r.status_code,
                    {
                        k: v
                        for k, v in r.json().items()
                        if k not in ("id", "task_id", "detail", "instance")
                    },
                )
                for r in (first, again, other)
            ]
        )
        assert "is not leased by this instance" in other.json()["detail"]
    assert answers[0] == answers[1]
    assert answers[0][0] == (200, {"state": "succeeded"})
    assert answers[0][1] == (200, {"state": "succeeded"})
    assert answers[0][2][0] == 409 and answers[0][2][1]["type"].endswith("/conflict")


def test_lean_events_answer_and_store_as_fastapi_does(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    batch = {"events": [_event(), _event()]}
    lean = p.node(creds, "POST", "/events", json=batch)
    p.app.dependency_overrides[get_state] = get_state
    try:
        full = p.node(creds, "POST", "/events", json=batch)  # the same ids: duplicates
    finally:
        del p.app.dependency_overrides[get_state]
    assert lean.status_code == full.status_code == 200
    assert lean.json() == {"accepted": 2, "duplicates": 0}
    assert full.json() == {"accepted": 0, "duplicates": 2}
