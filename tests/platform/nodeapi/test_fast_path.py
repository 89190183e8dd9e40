"""The node API's hot requests answered before FastAPI (api/node_fast.py): the same answers,
refusals, metrics and effects as FastAPI's own stack, and every request the fast path does
not accept handed to FastAPI untouched.

Whether FastAPI's stack ran is seen by counting ``FastAPI.__call__``; FastAPI's own
answer is forced by overriding ``get_state`` with itself (the fast path and the lean
handler both step aside then).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from starlette.types import Receive, Scope, Send

from powernode.platform.api.deps import get_state
from tests.platform.nodeapi.conftest import CERT_HEADER, NODE, Creds, NodePlatform
from tests.platform.nodeapi.test_auth import _foreign_cert

JSON = {"content-type": "application/json"}
BEAT = b'{"boot_id": "b", "agent_version": "1", "load": [0.1, 0.2, 0.3]}'
HISTOGRAM = "powernode_http_request_duration_seconds_count"


@pytest.fixture
def full_stack(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the HTTP requests that went through FastAPI's own stack."""
    seen: list[str] = []
    original = FastAPI.__call__

    async def counting(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    return seen


def _send(
    p: NodePlatform,
    der: bytes | None,
    method: str,
    path: str,
    body: bytes | None,
    *,
    headers: dict[str, str],
) -> Response:
    headers = dict(headers)
    if der is not None:
        headers[CERT_HEADER] = der.hex()
    return p.raw(method, NODE + path, content=body, headers=headers)


def _answer(r: Response) -> tuple[int, str, str]:
    return r.status_code, r.headers.get("content-type", ""), r.text


def _both(
    p: NodePlatform, der: bytes | None, method: str, path: str, body: bytes | None, *, headers: Any
) -> tuple[Response, Response]:
    """(this platform's answer, FastAPI's own answer) to the same request."""
    fast = _send(p, der, method, path, body, headers=headers)
    p.app.dependency_overrides[get_state] = get_state
    try:
        full = _send(p, der, method, path, body, headers=headers)
    finally:
        del p.app.dependency_overrides[get_state]
    return fast, full


HOT = [
    ("POST", "/status/heartbeat", BEAT),
    ("POST", "/status/heartbeat", b'{"boot_id": "b", "a_field_from_a_newer_agent": 1}'),
    ("POST", "/tasks/lease", b'{"max": 3}'),
    ("POST", "/tasks/outcomes", b'{"outcomes": [{"id": "nope", "outcome": "ack"}]}'),
    ("POST", "/events", b'{"events": []}'),
    ("GET", "/modules", None),
]


@pytest.mark.parametrize(("method", "path", "body"), HOT, ids=[f"{m} {p}" for m, p, _ in HOT])
def test_hot_requests_are_answered_before_fastapi_as_fastapi_answers(
    node_platform: NodePlatform, full_stack: list[str], method: str, path: str, body: bytes | None
) -> None:
    p = node_platform
    creds = p.enroll()
    full_stack.clear()
    fast, full = _both(p, creds.der, method, path, body, headers=JSON if body else {})
    assert full_stack == [NODE + path]  # only the forced one went through FastAPI
    assert _answer(fast) == _answer(full)
    assert fast.headers["content-length"] == str(len(fast.content))


BAD = {
    "malformed JSON": ("/status/heartbeat", b"{boot", JSON, 422, "JSON decode error"),
    "not an object": ("/status/heartbeat", b"[]", JSON, 422, "valid dictionary"),
    "a wrong type": ("/status/heartbeat", b'{"load": "high"}', JSON, 422, "valid list"),
    "an unknown field (lease)": ("/tasks/lease", b'{"max": 1, "min": 1}', JSON, 422, "min"),
    "no body": ("/status/heartbeat", None, JSON, 422, "Field required"),
    # FastAPI reads a body without a JSON content type as bytes, not an object
    "text/plain": ("/status/heartbeat", b"{}", {"content-type": "text/plain"}, 422, "valid dict"),
    "no content type": ("/status/heartbeat", b"{}", {}, 422, "valid dictionary"),
    "not UTF-8 JSON": ("/status/heartbeat", b"\x30\x03", JSON, 422, "JSON decode error"),
    "over the body limit": (
        "/status/heartbeat",
        b'{"boot_id": "' + b"x" * (1 << 20) + b'"}',
        JSON,
        413,
        "the limit is 1048576 bytes",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_bodies_are_handed_to_fastapi_and_answered_as_before(
    node_platform: NodePlatform, full_stack: list[str], case: str
) -> None:
    p = node_platform
    creds = p.enroll()
    p.state.heartbeats.flush()
    before = p.snapshot()
    path, body, headers, status, words = BAD[case]
    full_stack.clear()
    fast, full = _both(p, creds.der, "POST", path, body, headers=headers)
    assert full_stack == [NODE + path, NODE + path]  # the fast path handed it over
    assert _answer(fast) == _answer(full)
    assert fast.status_code == status, fast.text
    assert fast.headers["content-type"] == "application/problem+json"
    assert words in fast.text
    assert p.state.heartbeats.pending() == 0
    assert p.snapshot() == before


def _revoked(p: NodePlatform) -> bytes:
    creds = p.enroll()
    p.call("POST", f"/node_instances/{creds.instance_id}/certificates/revoke").raise_for_status()
    return creds.der


CALLERS = {
    "no certificate": (lambda p: None, "no client certificate"),
    "another CA's certificate": (
        lambda p: _foreign_cert(p.enroll().instance_id, p.clock()),
        "not by this platform",
    ),
    "a revoked certificate": (_revoked, "was revoked by the operator"),
    "not a certificate": (lambda p: b"\x30\x03\x02\x01\x01", "is not DER X.509"),
}


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("path", ["/status/heartbeat", "/tasks/lease"])
def test_refused_callers_get_fastapis_problem_from_the_fast_path(
    node_platform: NodePlatform, full_stack: list[str], caller: str, path: str
) -> None:
    p = node_platform
    make, words = CALLERS[caller]
    der = make(p)
    p.state.heartbeats.flush()
    before = p.snapshot()
    body = BEAT if path == "/status/heartbeat" else b'{"max": 1}'
    full_stack.clear()
    fast, full = _both(p, der, "POST", path, body, headers=JSON)
    assert full_stack == [NODE + path]  # the refusal was the fast path's own
    assert _answer(fast) == _answer(full)
    assert fast.status_code == 401
    assert fast.headers["content-type"] == "application/problem+json"
    assert fast.headers["www-authenticate"] == full.headers["www-authenticate"] == "Bearer"
    assert words in fast.json()["detail"]
    assert p.state.heartbeats.pending() == 0
    assert p.snapshot() == before


def _count(p: NodePlatform, status: str, route: str = NODE + "/status/heartbeat") -> float:
    labels = {"route": route, "method": "POST", "status": status}
    value = p.app.state.metrics.registry.get_sample_value(HISTOGRAM, labels)
    return float(value or 0)


def test_fast_requests_are_timed_under_the_same_labels(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    fast, full = _both(p, creds.der, "POST", "/status/heartbeat", BEAT, headers=JSON)
    assert fast.status_code == full.status_code == 200
    assert _count(p, "2xx") == 2
    fast, full = _both(p, None, "POST", "/status/heartbeat", BEAT, headers=JSON)
    assert fast.status_code == full.status_code == 401
    assert _count(p, "4xx") == 2
    fast, full = _both(p, creds.der, "POST", "/status/heartbeat", b"{", headers=JSON)
    assert fast.status_code == full.status_code == 422
    assert _count(p, "4xx") == 4
    fast, full = _both(p, creds.der, "POST", "/tasks/lease", b'{"max": 1}', headers=JSON)
    assert _count(p, "2xx", NODE + "/tasks/lease") == 2


def test_an_unexpected_error_is_the_same_500(
    node_platform: NodePlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = node_platform
    creds = p.enroll()

    def broken(_report: object) -> None:
        raise RuntimeError("the buffer broke")

    monkeypatch.setattr(p.state.heartbeats, "put", broken)
    client = AsyncClient(
        transport=ASGITransport(app=p.app, raise_app_exceptions=False),
        base_url="http://platform.test",
    )

    def send() -> Response:
        async def go() -> Response:
            headers = JSON | {CERT_HEADER: creds.der.hex()}
            return await client.post(NODE + "/status/heartbeat", content=BEAT, headers=headers)

        return p.portal.call(go)

    try:
        fast = send()
        p.app.dependency_overrides[get_state] = get_state
        full = send()
    finally:
        p.app.dependency_overrides.pop(get_state, None)
        p.portal.call(client.aclose)
    assert fast.status_code == full.status_code == 500
    assert _answer(fast) == _answer(full)
    assert fast.headers["content-type"] == "application/problem+json"
    assert _count(p, "5xx") == 2


def test_a_rotated_certificate_becomes_current_through_the_fast_path(
    node_platform: NodePlatform, full_stack: list[str]
) -> None:
    # The rare branch of authenticate (settle): the first use of the rotated certificate.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.platform.nodeapi.conftest import csr_pem

    p = node_platform
    old = p.enroll()
    key = Ed25519PrivateKey.generate()
    r = p.node(old, "POST", "/certificates/rotate", json={"csr_pem": csr_pem(key)})
    assert r.status_code == 200, r.text
    new = Creds(old.instance_id, key, r.json()["certificate_pem"])
    full_stack.clear()
    assert _send(p, new.der, "POST", "/status/heartbeat", BEAT, headers=JSON).status_code == 200
    refused = _send(p, old.der, "POST", "/status/heartbeat", BEAT, headers=JSON)
    assert refused.status_code == 401
    assert "no longer the instance's" in refused.json()["detail"]
    assert full_stack == []
