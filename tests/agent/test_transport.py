"""The node API client: the contract's shapes, error classes, retries, limits, TLS pinning."""

from __future__ import annotations

import itertools
import json
import random
import ssl
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from powernode.agent.lifecycle import ManualClock
from powernode.agent.transport import (
    Backoff,
    NodeClient,
    PlatformRefused,
    PlatformUnreachable,
    PlatformUntrusted,
    tls_context,
)
from powernode.errors import DataError, TransportError
from powernode.node.records import Event, HeartbeatRequest

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _client(handler, clock: ManualClock | None = None, **kw) -> NodeClient:
    return NodeClient(
        "https://p.test",
        transport=httpx.MockTransport(handler),
        clock=clock or ManualClock(NOW),
        rng=random.Random(1),  # noqa: S311 - reproducible jitter
        **kw,
    )


EVENT = Event(
    id="5a1e0c3d-2b4f-4a6e-8c7d-9e0f1a2b3c4d",
    kind="agent.test",
    severity="info",
    occurred_at="2025-01-01T00:00:00Z",
)


def test_requests_follow_the_contract() -> None:
    seen: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        answers = {
            "/node_api/status/heartbeat": {"server_time": "2025-01-01T00:00:00Z"},
            "/node_api/tasks/lease": {
                "tasks": [
                    {
                        "id": "t1",
                        "kind": "agent.noop",
                        "payload": {},
                        "attempt": 1,
                        "lease_expires_at": "2025-01-01T00:05:00Z",
                    }
                ]
            },
            "/node_api/events": {"accepted": 1, "duplicates": 0},
        }
        return httpx.Response(200, json=answers.get(request.url.path, {}))

    with _client(handler) as client:
        assert client.heartbeat(HeartbeatRequest(boot_id="b")).server_time == NOW
        [task] = client.lease(3)
        client.ack("t1", {"ok": True})
        client.fail("t2", "boom", retryable=False)
        reply = client.post_events([EVENT])
    assert task.id == "t1" and task.attempt == 1
    assert (reply.accepted, reply.duplicates) == (1, 0)
    assert seen == [
        ("POST", "/node_api/status/heartbeat", HeartbeatRequest(boot_id="b").to_json()),
        ("POST", "/node_api/tasks/lease", {"max": 3}),
        ("POST", "/node_api/tasks/t1/ack", {"result": {"ok": True}, "attempt": None}),
        (
            "POST",
            "/node_api/tasks/t2/fail",
            {"error": "boom", "retryable": False, "attempt": None},
        ),
        ("POST", "/node_api/events", {"events": [EVENT.to_json()]}),
    ]


def test_an_answer_with_an_unknown_field_is_refused_naming_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"server_time": "2025-01-01T00:00:00Z", "extra": 1})

    with _client(handler) as client, pytest.raises(DataError, match=r"extra: unknown field"):
        client.heartbeat(HeartbeatRequest())


def test_4xx_problem_detail_is_raised_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            403,
            json={"title": "Forbidden", "detail": "certificate revoked; re-enroll"},
            headers={"content-type": "application/problem+json"},
        )

    with _client(handler) as client, pytest.raises(PlatformRefused) as info:
        client.heartbeat(HeartbeatRequest())
    assert info.value.status == 403
    assert "certificate revoked; re-enroll" in str(info.value)
    assert len(calls) == 1


def test_unreachable_is_retried_with_backoff_then_raised() -> None:
    clock = ManualClock(NOW)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.monotonic())
        raise httpx.ConnectError("refused", request=request)

    with (
        _client(handler, clock, attempts=4, backoff=Backoff(1.0, 30.0)) as client,
        pytest.raises(PlatformUnreachable, match="cannot connect"),
    ):
        client.heartbeat(HeartbeatRequest())
    assert len(calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # Full jitter: each wait within [0, base * 2**n].
    assert all(0 <= g <= 2**n for n, g in enumerate(gaps))
    assert isinstance(PlatformUnreachable("x"), TransportError)


def test_5xx_retried_then_succeeds() -> None:
    answers = [
        httpx.Response(503),
        httpx.Response(429),
        httpx.Response(200, json={"server_time": "2025-01-01T00:00:00Z"}),
    ]

    with _client(lambda r: answers.pop(0), attempts=3) as client:
        client.heartbeat(HeartbeatRequest())
    assert answers == []


def test_lease_not_resent_after_it_was_sent() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)

    with _client(handler, attempts=5) as client, pytest.raises(PlatformUnreachable):
        client.lease(1)
    assert len(calls) == 1


def test_enroll_connect_error_retried_but_lost_answer_not() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        raise httpx.ReadError("reset", request=request)

    with _client(handler, attempts=5) as client, pytest.raises(PlatformUnreachable):
        client.enroll("tok", "csr")
    assert len(calls) == 2


def test_stop_cuts_retries_short() -> None:
    stop = threading.Event()
    stop.set()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    with (
        _client(handler, attempts=10, stop=stop) as client,
        pytest.raises(PlatformUnreachable, match="stopping"),
    ):
        client.heartbeat(HeartbeatRequest())
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(200, content=b"<html>"), "not JSON"),
        (httpx.Response(200, json={"tasks": "x"}), "tasks: expected a list, got str"),
        (
            httpx.Response(200, json={"tasks": [{"kind": "k", "lease_expires_at": "soon"}]}),
            "tasks.0.id: field required; tasks.0.payload: field required; ",
        ),
        (
            httpx.Response(200, json={"tasks": [{}] * 101}),
            "tasks: must have at most 100 items, has 101",
        ),
        (httpx.Response(200, content=b"x" * 5000), "larger than 4096 bytes"),
        (httpx.Response(302, headers={"location": "/"}), "unexpected redirect"),
    ],
    ids=["not-json", "wrong-shape", "bad-task", "too-many-tasks", "too-big", "redirect"],
)
def test_bad_answers_are_data_errors(answer: httpx.Response, message: str) -> None:
    with (
        _client(lambda r: answer, max_response_bytes=4096) as client,
        pytest.raises(DataError, match=message),
    ):
        client.lease(1)


@pytest.mark.parametrize("task_id", ["../x", "a/b", "", "a?b", "%2e"])
def test_task_ids_cannot_change_the_path(task_id: str) -> None:
    with (
        _client(lambda r: httpx.Response(200)) as client,
        pytest.raises(DataError, match="cannot be used in a URL path"),
    ):
        client.ack(task_id, {})


def test_full_jitter_bounds() -> None:
    rng = random.Random(5)  # noqa: S311 - reproducible jitter
    b = Backoff(1.0, 30.0)
    for attempt in range(40):
        d = b.delay(attempt, rng)
        assert 0 <= d <= min(30.0, 2.0**attempt)


def test_tls_context_trusts_only_the_given_ca(tmp_path: Path) -> None:
    from tests.agent.fakeplatform import make_ca, pem

    _, ca = make_ca("only", NOW)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(pem(ca))
    ctx = tls_context(ca_file)
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "only"),),)]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(TransportError, match="cannot set up TLS"):
        tls_context(tmp_path / "missing.pem")


def test_untrusted_server_certificate_is_not_retried(tmp_path: Path) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLError as e:
            raise httpx.ConnectError("tls", request=request) from e

    with (
        _client(handler, attempts=5) as client,
        pytest.raises(PlatformUntrusted, match="does not chain to the pinned platform CA"),
    ):
        client.heartbeat(HeartbeatRequest())
    assert len(calls) == 1
