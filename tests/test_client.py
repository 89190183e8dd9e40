"""The one operator client: both faces send the same request and read an answer the same way."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from powernode.client import (
    ApiError,
    OperatorClient,
    PlatformUnreachableError,
    SyncOperatorClient,
)

URL = "http://platform.test"


def _echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "method": request.method,
            "path": request.url.path,
            "query": sorted(request.url.params.multi_items()),
            "auth": request.headers.get("authorization"),
            "body": json.loads(request.content) if request.content else None,
        },
    )


TOKEN = "pnt_x"  # a test token


def _sync(handler: httpx.MockTransport, token: str | None = TOKEN) -> SyncOperatorClient:
    return SyncOperatorClient(URL, token, handler)


def _async_call(
    handler: httpx.MockTransport, method: str, path: str, **kw: object
) -> dict[str, object]:
    async def go() -> dict[str, object]:
        async with OperatorClient(URL, "pnt_x", handler) as c:
            return await c.request(method, path, **kw)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_both_faces_send_the_same_request() -> None:
    t = httpx.MockTransport(_echo)
    kw = {"body": {"a": 1}, "params": {"limit": 5, "kind": None, "s": ["x", "y"]}}
    with _sync(t) as c:
        sync = c.request("POST", "/node_modules", **kw)  # type: ignore[arg-type]
    assert sync == _async_call(t, "POST", "/node_modules", **kw)
    assert sync == {
        "method": "POST",
        "path": "/api/v1/system/node_modules",
        "query": [["limit", "5"], ["s", "x"], ["s", "y"]],  # None left out
        "auth": "Bearer pnt_x",
        "body": {"a": 1},
    }


def test_no_token_sends_no_authorization_and_raw_posts_never_do() -> None:
    t = httpx.MockTransport(_echo)
    with _sync(t, token=None) as c:
        assert c.get("/x")["auth"] is None
    with _sync(t) as c:
        answer = c.post_raw("/webhooks/gitea/module", b'{"k": 1}', {"X-Sig": "m"})
    assert answer["auth"] is None and answer["body"] == {"k": 1}


def test_a_refusal_is_an_api_error_with_status_reason_and_detail() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "module 'nginx' exists", "slug": "conflict"})

    t = httpx.MockTransport(refuse)
    with _sync(t) as c, pytest.raises(ApiError) as e:
        c.post("/node_modules", {"name": "nginx"})
    err = e.value
    assert (err.status, err.reason, err.detail) == (409, "Conflict", "module 'nginx' exists")
    assert (err.method, err.path, err.problem["slug"]) == ("POST", "/node_modules", "conflict")
    with pytest.raises(ApiError, match="409: module 'nginx' exists"):
        _async_call(t, "POST", "/node_modules", body={})


def test_a_refusal_that_is_not_json_keeps_the_text() -> None:
    t = httpx.MockTransport(lambda r: httpx.Response(502, text="bad gateway " * 100))
    with _sync(t) as c, pytest.raises(ApiError) as e:
        c.get("/x")
    assert e.value.detail.startswith("bad gateway") and len(e.value.detail) == 500
    assert e.value.problem == {}


def test_answers_that_are_not_objects() -> None:
    t = httpx.MockTransport(lambda r: httpx.Response(200, json=[1, 2]))
    with _sync(t) as c:
        assert c.get("/x") == {"items": [1, 2]}
    empty = httpx.MockTransport(lambda r: httpx.Response(204))
    with _sync(empty) as c:
        assert c.delete("/x") == {}
    garbage = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    with _sync(garbage) as c, pytest.raises(ApiError, match="answer is not JSON"):
        c.get("/x")


def test_an_unreachable_platform_is_a_transport_error_naming_the_url() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    t = httpx.MockTransport(down)
    with _sync(t) as c, pytest.raises(PlatformUnreachableError) as e:
        c.get("/x")
    assert e.value.cause == "connection refused"
    assert str(e.value) == f"cannot reach the platform at {URL}: connection refused"
    with pytest.raises(PlatformUnreachableError):
        _async_call(t, "GET", "/x")


def test_the_async_face_refuses_use_outside_its_context() -> None:
    async def go() -> None:
        await OperatorClient(URL, None).get("/x")

    with pytest.raises(RuntimeError, match="outside 'async with'"):
        asyncio.run(go())
