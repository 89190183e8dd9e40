"""The node API, ``/node_api/…`` (docs/node-api.md): what agents call.

Every endpoint but ``enroll`` takes the caller's identity from its client
certificate (:func:`current_node`), never from the body. The certificate
comes from :func:`client_certificate` — the TLS connection, or a trusted
proxy's header (``tlsserve.peer_certificate``); in-process tests override
that one dependency. The heartbeat handler is ``async`` and touches no
database (it buffers, services/nodeapi/heartbeat.py); the others are plain
functions run in the thread pool, each one transaction.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from powernode.platform import tlsserve
from powernode.platform.api.deps import PlatformState, State, get_state
from powernode.platform.api.problem_responses import RATE_LIMITED
from powernode.platform.api.schemas.nodeapi import (
    AckIn,
    DesiredModulesOut,
    EnrollIn,
    EnrollOut,
    EventsIn,
    EventsOut,
    FailIn,
    HeartbeatIn,
    HeartbeatOut,
    LeaseIn,
    LeaseOut,
    OutcomeOut,
    OutcomesIn,
    OutcomesOut,
    RotateIn,
    RotateOut,
)
from powernode.platform.db.fleet import TaskState
from powernode.platform.pki import NodePeer
from powernode.platform.problems import AuthenticationError, ConflictError, PermissionDeniedError
from powernode.platform.services.context import READ, Actor
from powernode.platform.services.nodeapi import enroll as enrolling
from powernode.platform.services.nodeapi import events, modules, ratelimit, tasks
from powernode.platform.services.nodeapi.heartbeat import HeartbeatReport
from powernode.platform.services.nodeapi.identity import authenticate

JSON = "application/json"
# Any: Starlette's coroutine type parameters (send and yield types)
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# (endpoint, body model, path parameters, async?); Any: each endpoint's own return type
LeanCall = tuple[Callable[..., Any], type[BaseModel] | None, tuple[str, ...], bool]


class NodeRoute(APIRoute):
    """The node API's routes: the hot ones answer the common request without
    FastAPI's per-request machinery.

    FastAPI resolves an endpoint's dependencies, validates its body and
    validates and serialises its answer through generic code that, on a
    heartbeat, cost more CPU than everything the heartbeat itself does (bench/
    bench_heartbeats.py). For an endpoint whose parameters are only ``body``
    (a pydantic model), ``state``, ``node`` and path parameters, the handler
    here does the same steps directly: the body is parsed as FastAPI parses it
    (the model's validation of the JSON, in one pass) only when the request
    says ``application/json``; the caller is :func:`current_node` on
    :func:`client_certificate` (or its override, a function of the request,
    as in-process tests set); a sync endpoint runs in the thread pool, as
    FastAPI runs it; a model answer is serialised as FastAPI does
    (``model_dump_json``). Anything else — no or another content type, a body
    that is not JSON or not valid, an override of ``get_state`` or
    ``current_node`` — is handed to FastAPI's own handler for the route, so
    every refusal is the one FastAPI gives. The route's declaration (and so
    /openapi.json) is FastAPI's, unchanged. Those without path parameters are
    answered one step earlier still, before FastAPI's middleware and router
    (node_fast.py); this handler runs when that step hands a request over.
    """

    def get_route_handler(self) -> Handler:
        full = super().get_route_handler()
        call = lean_call(self)
        if call is None:
            return full
        endpoint, body_model, path_params, is_async = call
        status_code = self.status_code or 200

        async def handler(request: Request) -> Response:
            overrides = request.app.dependency_overrides
            if overrides and (get_state in overrides or current_node in overrides):
                return await full(request)
            kwargs: dict[str, Any] = {}  # Any: the endpoint's arguments
            if body_model is not None:
                body = _valid_body(request, await request.body(), body_model)
                if body is None:
                    return await full(request)
                kwargs["body"] = body
            state = request.app.state.platform
            cert_of = overrides.get(client_certificate, client_certificate)
            cert = cert_of(request)
            kwargs["node"] = await current_node(state, await cert if _awaitable(cert) else cert)
            kwargs["state"] = state
            for name in path_params:
                kwargs[name] = request.path_params[name]
            if is_async:
                answer = await endpoint(**kwargs)
            else:
                answer = await run_in_threadpool(endpoint, **kwargs)
            if isinstance(answer, Response):
                return answer
            assert isinstance(answer, BaseModel)
            return Response(
                answer.model_dump_json(by_alias=True), status_code=status_code, media_type=JSON
            )

        return handler


_LEAN_PARAMS = frozenset({"body", "state", "node"})


def lean_call(
    route: APIRoute,
) -> LeanCall | None:
    """(endpoint, body model, path parameters, async?) when the lean handler can
    run ``route``'s endpoint, else None (FastAPI's handler runs it)."""
    endpoint = route.endpoint
    params = inspect.signature(endpoint).parameters
    path_params = tuple(route.param_convertors)
    if "state" not in params or "node" not in params:
        return None
    if set(params) - _LEAN_PARAMS - set(path_params) or route.dependencies:
        return None
    if {d.call for d in route.dependant.dependencies} - {get_state, current_node}:
        return None
    shaping = (
        route.response_model_include,
        route.response_model_exclude,
        route.response_model_exclude_unset,
        route.response_model_exclude_defaults,
        route.response_model_exclude_none,
    )
    if any(shaping) or not route.response_model_by_alias:
        return None
    hints = typing.get_type_hints(endpoint)
    answer = hints.get("return")
    if not isinstance(answer, type):
        return None
    if not issubclass(answer, Response) and answer is not route.response_model:
        return None  # a model answer must be the declared one (FastAPI would convert others)
    if not issubclass(answer, Response | BaseModel):
        return None
    body_model = None
    if "body" in params:
        hint = hints["body"]
        if not (isinstance(hint, type) and issubclass(hint, BaseModel)):
            return None
        body_model = hint
    return endpoint, body_model, path_params, inspect.iscoroutinefunction(endpoint)


def _valid_body(request: Request, raw: bytes, model: type[BaseModel]) -> BaseModel | None:
    """The body as FastAPI would hand it to the endpoint, or None (FastAPI's handler
    decides what to answer: a missing or invalid body is its 422)."""
    ctype = request.headers.get("content-type", "")
    if not raw or ctype.partition(";")[0].strip().lower() != JSON:
        return None
    try:
        return model.model_validate_json(raw)  # one pass: no json.loads, then validation
    except ValidationError:  # not JSON or not valid: FastAPI's handler words the 422
        return None


def _awaitable(value: object) -> bool:
    return inspect.isawaitable(value)


router = APIRouter(tags=["node API"], route_class=NodeRoute)


async def client_certificate(request: Request) -> bytes | None:
    """DER of the caller's client certificate (the seam in-process tests override)."""
    return tlsserve.peer_certificate(request)


async def current_node(
    state: State, cert_der: Annotated[bytes | None, Depends(client_certificate)]
) -> NodePeer:
    # The instance row's live identity, read for every request (batched with
    # the other requests waiting: services/nodeapi/identity_batch.py).
    return await authenticate(
        state.node_ca, state.identities.get, state.engine, cert_der, state.clock()
    )


Node = Annotated[NodePeer, Depends(current_node)]


def cert_lifetime(state: PlatformState) -> timedelta:
    return timedelta(days=state.settings.node_cert_lifetime_days)


def _node_actor(peer: NodePeer) -> Actor:
    return Actor(f"instance:{peer.instance_id}", None, frozenset({READ}))


@router.post("/enroll", status_code=status.HTTP_201_CREATED)
def enroll(body: EnrollIn, state: State) -> EnrollOut:
    """A bootstrap token and an Ed25519 CSR → the node's client certificate (no client cert)."""
    try:
        with state.unit(Actor("enroll", None, frozenset())) as ctx:
            instance, issued = enrolling.enroll(
                ctx.session,
                state.node_ca,
                body.bootstrap_token,
                body.csr_pem,
                now=ctx.now,
                lifetime=cert_lifetime(state),
                claimed_instance=body.instance_id,
            )
    except (AuthenticationError, PermissionDeniedError, ConflictError) as e:
        # The refusal rolled back; the event that says so is its own transaction.
        with state.unit(Actor("enroll", None, frozenset())) as ctx:
            enrolling.record_refusal(ctx.session, e, body.instance_id, body.csr_pem, now=ctx.now)
        raise
    return EnrollOut(
        instance_id=instance.id,
        certificate_pem=issued.certificate_pem,
        ca_pem=state.node_ca.ca_pem,
        not_after=issued.not_after,
    )


@router.post("/status/heartbeat")
async def heartbeat(body: HeartbeatIn, state: State, node: Node) -> HeartbeatOut:
    """Buffered: written with the other instances' within ``heartbeat_flush_seconds``."""
    now = state.clock()
    state.heartbeats.put(
        HeartbeatReport(
            instance_id=node.instance_id,
            at=now,
            boot_id=body.boot_id,
            agent_version=body.agent_version,
            running_module_digests=body.running_module_digests,
            mounts=body.mounts,
            load=body.load,
            mem=body.mem,
        )
    )
    return HeartbeatOut(server_time=now)


@router.post("/tasks/lease", response_model=LeaseOut)
def lease(body: LeaseIn, state: State, node: Node) -> Response:
    """With ``outcomes``: they and the lease are one transaction, all or nothing
    (services/nodeapi/tasks.report_and_lease); the answer carries theirs."""
    answers: list[tasks.Recorded] = []
    if body.outcomes:
        sent = [
            tasks.Outcome(o.id, o.outcome, o.result, o.error, o.retryable, o.attempt)
            for o in body.outcomes
        ]
        answers, leased = tasks.report_and_lease(
            state.transaction,
            node.instance_id,
            sent,
            body.max,
            now=state.clock(),
            policy=state.node_policy,
            # PostgreSQL: the acks and the lease as one statement, no BEGIN/COMMIT.
            one_statement=state.statement if state.engine.dialect.name == "postgresql" else None,
        )
    else:
        # One statement: no ORM session, and on PostgreSQL no BEGIN/COMMIT around it.
        with state.statement() as conn:
            leased = tasks.lease(conn, node.instance_id, body.max, state.clock(), state.node_policy)
    # Written directly: up to 100 tasks through LeasedOut models, FastAPI's
    # response validation and serialisation were a fifth of a lease's CPU.
    doc: dict[str, Any] = {  # Any: JSON
        "tasks": [
            {
                "id": t.id,
                "kind": t.kind,
                "payload": t.payload,
                "attempt": t.attempt,
                "lease_expires_at": _rfc3339(t.lease_expires_at),
            }
            for t in leased
        ]
    }
    if body.outcomes:  # absent otherwise: an agent that predates the field refuses it
        doc["outcomes"] = _answers(answers)
    return _json(doc)


def _json(doc: dict[str, Any]) -> Response:  # Any: JSON
    return Response(json.dumps(doc, separators=(",", ":")).encode(), media_type=JSON)


def _rfc3339(at: datetime) -> str:
    # What pydantic writes for an aware UTC datetime: "…Z".
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@router.post("/tasks/{task_id}/ack")
def ack(task_id: str, body: AckIn, state: State, node: Node) -> OutcomeOut:
    """Idempotent: an outcome already recorded answers 200 and changes nothing."""
    # The common case, a task this node holds, is one compare-and-set; anything
    # else (already final, not leased, another attempt's) is judged and worded
    # by tasks.ack under the row's lock, as before.
    with state.statement() as conn:
        if tasks.ack_leased(
            conn, node.instance_id, task_id, body.result, state.clock(), attempt=body.attempt
        ):
            return OutcomeOut(id=task_id, state=TaskState.SUCCEEDED.value)
    with state.unit(_node_actor(node)) as ctx:
        after = tasks.ack(
            ctx.session, node.instance_id, task_id, body.result, ctx.now, attempt=body.attempt
        )
    return OutcomeOut(id=task_id, state=after)


@router.post("/tasks/{task_id}/fail")
def fail(task_id: str, body: FailIn, state: State, node: Node) -> OutcomeOut:
    with state.unit(_node_actor(node)) as ctx:
        after = tasks.fail(
            ctx.session,
            node.instance_id,
            task_id,
            body.error,
            body.retryable,
            now=ctx.now,
            policy=state.node_policy,
            attempt=body.attempt,
        )
    return OutcomeOut(id=task_id, state=after)


@router.post("/tasks/outcomes", response_model=OutcomesOut)
def outcomes(body: OutcomesIn, state: State, node: Node) -> Response:
    """Several acks/fails in one transaction, each answered on its own (in order).

    A refused outcome (404, 409) changes nothing and does not stop the others;
    the request itself is 200 once the body is valid.
    """
    batch = [
        tasks.Outcome(o.id, o.outcome, o.result, o.error, o.retryable, o.attempt)
        for o in body.outcomes
    ]
    with state.unit(_node_actor(node)) as ctx:
        answers = tasks.record(
            ctx.session, node.instance_id, batch, now=ctx.now, policy=state.node_policy
        )
    return _json({"outcomes": _answers(answers)})


def _answers(answers: list[tasks.Recorded]) -> list[dict[str, Any]]:  # Any: JSON
    return [
        {"id": a.task_id, "status": a.status, "state": a.state or None}
        | ({"detail": a.detail} if a.detail else {})
        for a in answers
    ]


@router.post("/events", responses=RATE_LIMITED)
def post_events(body: EventsIn, state: State, node: Node) -> EventsOut:
    """At most 500 per call; idempotent by event id."""
    batch = [
        events.NodeEvent(e.id, e.kind, e.severity, e.occurred_at, e.payload) for e in body.events
    ]
    policy = state.node_policy
    with state.unit(_node_actor(node)) as ctx:
        ratelimit.charge(
            ctx.session,
            node.instance_id,
            "events",
            len(batch),
            rate=policy.events_per_second,
            burst=policy.events_burst,
            now=ctx.now,
            what="events",
        )
        accepted, duplicates = events.store(ctx.session, node.instance_id, batch)
    return EventsOut(accepted=accepted, duplicates=duplicates)


@router.post("/certificates/rotate", responses=RATE_LIMITED)
def rotate(body: RotateIn, state: State, node: Node) -> RotateOut:
    with state.unit(_node_actor(node)) as ctx:
        issued = enrolling.rotate(
            ctx.session,
            state.node_ca,
            node,
            body.csr_pem,
            now=ctx.now,
            lifetime=cert_lifetime(state),
            min_interval=state.node_policy.rotate_min_interval,
        )
    return RotateOut(certificate_pem=issued.certificate_pem, not_after=issued.not_after)


@router.get("/modules")
def desired_modules(state: State, node: Node) -> DesiredModulesOut:
    """The desired module set of the caller's instance (issue 7)."""
    with state.unit(_node_actor(node), write=False) as ctx:
        answer = modules.desired_modules(ctx, node.instance_id)
    return DesiredModulesOut.model_validate(answer.to_json())
