"""The node API's hot requests answered at the ASGI level, before FastAPI's layers.

Every request to a FastAPI app passes, before its endpoint runs, through
FastAPI's telemetry check, Starlette's error middleware, our
``MetricsMiddleware`` and ``BodyLimit``, Starlette's exception middleware,
FastAPI's exit stack and the router, which tries the routes in order and
records its match in the scope. On a heartbeat that was more CPU than the
heartbeat's own work (bench/bench_heartbeats.py, docs/deploy.md).

:class:`PlatformApp` is the FastAPI app with one addition: a request whose
method and path are exactly those of one of the node API's lean routes
without path parameters (node_api.NodeRoute: heartbeat, lease, outcomes,
events, rotate, the desired set) is answered here, doing what those layers
do for it and nothing else:

- the body limit: a declared or read body over ``max_body_bytes`` goes to
  the app, whose ``BodyLimit`` refuses it as always;
- the body: only ``application/json``, parsed and validated by the route's
  model in one pass (``model_validate_json``); anything it does not accept
  (no body, another content type, not JSON, invalid) goes to the app, so
  every 415/422 is FastAPI's own;
- the caller: :func:`node_api.current_node` on
  :func:`node_api.client_certificate` (or its override), exactly as the
  lean handler resolves them: the live identity is read per request;
- the endpoint runs as the lean handler runs it (a sync one in the thread
  pool) and its answer is written as FastAPI writes it;
- an exception is handled by Starlette's own ``ExceptionMiddleware`` and
  ``ServerErrorMiddleware`` with the app's handlers: a refusal (401, 409,
  429) is the same problem+json, an unexpected error the same 500;
- the request is timed into the same histogram, with the same route
  template, method and status class labels.

Anything else goes to the FastAPI app untouched, the body it had read
replayed: an override of ``get_state`` or ``current_node`` (tests forcing
FastAPI's handler), FastAPI's native telemetry switched on, a ``root_path``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powernode.platform.api.deps import get_state
from powernode.platform.api.limits import content_length
from powernode.platform.api.node_api import (
    JSON,
    LeanCall,
    NodeRoute,
    client_certificate,
    current_node,
    lean_call,
)
from powernode.platform.metrics import Metrics, StatusSeen

_KEY = "powernode.fast"
_JSON_HEADER = (b"content-type", JSON.encode())


@dataclass(frozen=True)
class FastRoute:
    """A lean route as the fast path runs it."""

    call: LeanCall
    status_code: int
    template: str  # the route's path with its prefix: the metrics' route label


@dataclass
class _Request:
    """What the fast path hands its inner stack (in the scope, under ``_KEY``)."""

    route: FastRoute
    body: BaseModel | None
    start: float


class PlatformApp(FastAPI):
    """FastAPI, with the node API's lean routes answered before its middleware (module doc)."""

    def __init__(self, **kwargs: Any) -> None:  # Any: FastAPI's keyword arguments
        super().__init__(**kwargs)
        self.fast_routes: dict[tuple[str, str], FastRoute] = {}
        self._fast_max_body = 0
        self._fast_metrics: Metrics | None = None
        self._fast_stack: ASGIApp | None = None

    def answer_node_api_first(
        self, router: APIRouter, prefix: str, *, max_body_bytes: int, metrics: Metrics
    ) -> None:
        """Answer ``router``'s lean routes without path parameters before FastAPI's layers."""
        for route in router.routes:
            if not isinstance(route, NodeRoute) or route.param_convertors:
                continue
            call = lean_call(route)
            if call is None:
                continue
            fast = FastRoute(call, route.status_code or 200, prefix + route.path)
            for method in route.methods or ():
                self.fast_routes[(method, fast.template)] = fast
        self._fast_max_body = max_body_bytes
        self._fast_metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.fast_routes:
            fast = self.fast_routes.get((scope["method"], scope["path"]))
            if fast is not None and not self.root_path and not scope.get("root_path"):
                await self._fast(fast, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _fast(self, fast: FastRoute, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        overrides = self.dependency_overrides
        telemetry = getattr(self, "_native_telemetry", None)  # FastAPI >= 0.160
        if (
            (overrides and (get_state in overrides or current_node in overrides))
            or (telemetry is not None and telemetry.enabled())
            or self._fast_metrics is None
        ):
            await super().__call__(scope, receive, send)
            return
        body_model = fast.call[1]
        body: BaseModel | None = None
        if body_model is not None:
            read: list[Message] = []
            raw = await self._read_body(scope, receive, read)
            body = None if raw is None else _valid_body(scope, raw, body_model)
            if body is None:  # FastAPI decides: 413, 415, 422, …
                await super().__call__(scope, _replay(read, receive), send)
                return
        scope[_KEY] = _Request(fast, body, start)
        scope["app"] = self
        if self._fast_stack is None:
            self._fast_stack = self._build_fast_stack()
        await self._fast_stack(scope, receive, send)

    async def _read_body(self, scope: Scope, receive: Receive, read: list[Message]) -> bytes | None:
        """The whole body, or None when the app must see the request (over the limit, a
        disconnect); every message taken from ``receive`` is kept in ``read``."""
        declared = content_length(scope)
        if declared is not None and declared > self._fast_max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._fast_max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _build_fast_stack(self) -> ASGIApp:
        # The same error handling as FastAPI.build_middleware_stack, with the app's handlers.
        error_handler = None
        handlers: dict[Any, Callable[..., Any]] = {}  # Any: Starlette's handler keys and types
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        inner = ExceptionMiddleware(_endpoint, handlers=handlers, debug=self.debug)
        timed = _Timed(inner, self._fast_metrics)
        return ServerErrorMiddleware(timed, handler=error_handler, debug=self.debug)


class _Timed:
    """MetricsMiddleware's observation, with the route template known beforehand."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None) -> None:
        assert metrics is not None
        self.app = app
        self.requests = metrics.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = StatusSeen(send)
        pending: _Request = scope[_KEY]
        try:
            await self.app(scope, receive, seen)
        finally:
            self.requests.labels(pending.route.template, scope["method"], seen.label).observe(
                time.perf_counter() - pending.start
            )


async def _endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The lean handler's steps (node_api.NodeRoute) on the body read and validated."""
    pending: _Request = scope[_KEY]
    endpoint, _model, _params, is_async = pending.route.call
    request = Request(scope, receive)
    app: PlatformApp = scope["app"]
    state = app.state.platform
    cert_of = app.dependency_overrides.get(client_certificate, client_certificate)
    cert = cert_of(request)
    if inspect.isawaitable(cert):
        cert = await cert
    kwargs: dict[str, Any] = {  # Any: the endpoint's arguments
        "node": await current_node(state, cert),
        "state": state,
    }
    if pending.body is not None:
        kwargs["body"] = pending.body
    if is_async:
        answer = await endpoint(**kwargs)
    else:
        answer = await run_in_threadpool(endpoint, **kwargs)
    if isinstance(answer, Response):
        await answer(scope, receive, send)
        return
    assert isinstance(answer, BaseModel)
    payload = answer.model_dump_json(by_alias=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": pending.route.status_code,
            "headers": [(b"content-length", str(len(payload)).encode()), _JSON_HEADER],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _valid_body(scope: Scope, raw: bytes, model: type[BaseModel]) -> BaseModel | None:
    """``raw`` validated by ``model`` when the request says application/json, else None."""
    if not raw:
        return None
    ctype = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value
            break
    if ctype.partition(b";")[0].strip().lower() != JSON.encode():
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:  # not JSON or not valid: FastAPI words the 422
        return None


def _replay(read: list[Message], receive: Receive) -> Receive:
    """``receive`` with the messages already taken from it given back first."""
    queue = list(read)

    async def replayed() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed
