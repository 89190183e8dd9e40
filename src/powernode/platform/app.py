"""The app factory: ``create_app(settings)`` → a FastAPI app serving the operator API.

Webhooks (``/api/v1/system/webhooks/…``), the node API (``/node_api/…``),
drift reports and composition previews are separate routers to be added next
to the ones included here; they share :class:`PlatformState` and the
problem+json handlers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from powernode import __version__
from powernode.errors import ConfigError
from powernode.platform.api import (
    audit,
    desired,
    evidence,
    ingest,
    metrics,
    modules,
    netboot,
    node_agent_ops,
    node_api,
    node_api_commits,
    node_api_scripts,
    node_ops,
    nodes,
    patterns,
    rollouts,
    templates,
    versions,
)
from powernode.platform.api.allow import allowed_methods
from powernode.platform.api.deps import PlatformState
from powernode.platform.api.limits import BodyLimit
from powernode.platform.api.node_fast import PlatformApp
from powernode.platform.api.problem_responses import PROBLEM_RESPONSES
from powernode.platform.db import NodeInstance
from powernode.platform.db.migrate import upgrade
from powernode.platform.db.session import make_engine, make_sessionmaker
from powernode.platform.metrics import Metrics, MetricsMiddleware
from powernode.platform.pki import NodeCA
from powernode.platform.problems import (
    PROBLEM_CONTENT_TYPE,
    BusyError,
    PlatformError,
    RateLimitedError,
    problem_body,
)
from powernode.platform.sealing import Sealer, load_or_create_key
from powernode.platform.services.context import Actor
from powernode.platform.services.nodeapi.heartbeat import HeartbeatBuffer
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.platform.services.nodeapi.identity_batch import LiveIdentityReader
from powernode.platform.services.nodes import reconcile_instances
from powernode.platform.services.providers import InstanceProvider, provider_of
from powernode.platform.settings import Settings
from powernode.platform.ui import evidence_page as ui_evidence
from powernode.platform.ui import routes as ui_routes

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/system"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    provider: InstanceProvider | None = None,
    clock: Callable[[], datetime] = _utcnow,
    node_policy: NodeApiPolicy | None = None,
) -> FastAPI:
    """Build the app; migrates the database first when ``settings.migrate_on_start``."""
    engine = make_engine(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_overflow,
    )
    if settings.migrate_on_start:
        upgrade(engine)
    node_policy = node_policy or node_policy_of(settings)
    _check_migrated(engine)
    state = PlatformState(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        sealer=Sealer(load_or_create_key(settings.effective_secret_key_file)),
        provider=provider or provider_of(settings),
        clock=clock,
        node_ca=NodeCA.load_or_create(settings.pki_dir, now=clock()),
        identities=LiveIdentityReader(engine),
        heartbeats=HeartbeatBuffer(engine, node_policy.heartbeat_flush_seconds),
        node_policy=node_policy,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # A restart: instances whose machine went while we were away are marked lost.
        with state.unit(Actor("platform", None, frozenset())) as ctx:
            reconcile_instances(ctx, state.provider)
        async with anyio.create_task_group() as tg:
            # Heartbeats are coalesced and written in batches (services/nodeapi/heartbeat.py).
            tg.start_soon(state.heartbeats.run)
            yield
            tg.cancel_scope.cancel()
        state.heartbeats.flush()  # the last reports before the process goes
        engine.dispose()

    app = PlatformApp(
        title="powernode platform",
        version=__version__,
        description="Operator API: catalog, promotion, templates, nodes and instances.",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.platform = state
    # The node API first: routes are matched in order, and heartbeats are the
    # most frequent request by far.
    app.include_router(node_api.router, prefix="/node_api", responses=PROBLEM_RESPONSES)
    app.include_router(node_api_scripts.router, prefix="/node_api", responses=PROBLEM_RESPONSES)
    app.include_router(node_api_commits.router, prefix="/node_api", responses=PROBLEM_RESPONSES)
    routers = (
        modules,
        versions,
        templates,
        desired,
        nodes,
        audit,
        ingest,
        netboot,
        evidence,
        rollouts,
    )
    for router in (r.router for r in (*routers, node_ops, node_agent_ops)):
        app.include_router(router, prefix=API_PREFIX, responses=PROBLEM_RESPONSES)
    app.include_router(metrics.router, responses=PROBLEM_RESPONSES)
    app.include_router(ui_routes.router)
    app.include_router(ui_evidence.router)
    _install_problem_handlers(app)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    # A scrape only reads: a read-only session, never SQLite's write lock.
    app.state.metrics = Metrics(make_sessionmaker(engine, write=False), clock, state.heartbeats)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    # The node API's hot requests skip the layers above, doing what they do (node_fast.py).
    app.answer_node_api_first(
        node_api.router,
        "/node_api",
        max_body_bytes=settings.max_body_bytes,
        metrics=app.state.metrics,
    )

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def node_policy_of(settings: Settings) -> NodeApiPolicy:
    """The node API's policy with the limits an operator may set."""
    return NodeApiPolicy(
        rotate_min_interval=timedelta(seconds=settings.node_rotate_min_interval_seconds),
        events_per_second=settings.node_events_per_second,
        events_burst=settings.node_events_burst,
    )


def _check_migrated(engine: Engine) -> None:
    """Stop at start, not at the first node request, on a database older than this code."""
    try:
        with engine.connect() as conn:
            conn.execute(select(NodeInstance.cert_serial).limit(1)).all()
    except SQLAlchemyError as e:
        where = engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"{where}: cannot read the node instances ({type(e).__name__}); the database is "
            "not migrated to this version: run powernode platform migrate"
        ) from e


def _problem(status: int, body: dict[str, object]) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE)


def _message(error: Mapping[str, object]) -> str:
    # A pattern of ours is a rule with a name: say it in words, not as the regex.
    words = None
    ctx = error.get("ctx")
    if error["type"] == "string_pattern_mismatch" and isinstance(ctx, Mapping):
        words = patterns.explain(str(ctx.get("pattern", "")))
    if words is None:
        return str(error["msg"])
    return f"{str(error.get('input'))[:80]!r} is {words}"


def _install_problem_handlers(app: FastAPI) -> None:
    # RFC 9457: every error is application/problem+json with a detail saying
    # what was wrong and what to do.

    @app.exception_handler(PlatformError)
    async def platform_error(request: Request, exc: PlatformError) -> JSONResponse:
        log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.detail)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, RateLimitedError | BusyError):
            headers = {"Retry-After": str(exc.retry_after)}
        resp = _problem(exc.status, exc.problem(request.url.path))
        if headers:
            resp.headers.update(headers)
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": _message(e), "type": e["type"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:10])
        body = problem_body(
            422,
            "invalid-input",
            "Invalid input",
            f"the request does not match the schema (see /openapi.json): {detail}",
            instance=request.url.path,
            extra={"errors": errors},
        )
        return _problem(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"no such endpoint {request.url.path}; the API is described at /openapi.json"
        headers: dict[str, str] = {}
        if exc.status_code == 405:
            allow = allowed_methods(request.app.router.routes, request.scope)
            headers["Allow"] = ", ".join(allow)
            detail = (
                f"{request.method} is not allowed on {request.url.path}; "
                f"allowed: {headers['Allow']}"
            )
        body = problem_body(
            exc.status_code, "http-error", "HTTP error", detail, instance=request.url.path
        )
        resp = _problem(exc.status_code, body)
        resp.headers.update(headers)
        return resp

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = problem_body(
            500,
            "internal",
            "Internal error",
            f"the platform failed unexpectedly ({type(exc).__name__}); see the server log",
            instance=request.url.path,
        )
        return _problem(500, body)
