"""Console pages of the fleet: instances (drift per module, running digests, the
console log, events), fleet events live, the audit log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from powernode.platform.api.schemas.desired import DriftOut
from powernode.platform.db import InstanceStatus, Node, NodeInstance
from powernode.platform.db.fleet import FleetEvent
from powernode.platform.db.templates import NodeTemplate
from powernode.platform.problems import PlatformError
from powernode.platform.services import audit, nodes
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.drift import instance_drift
from powernode.platform.services.paging import cursor, parse_cursor
from powernode.platform.services.providers import InstanceProvider
from powernode.platform.ui.core import (
    PAGE,
    Form,
    Login,
    action,
    actor_of,
    bulk,
    headers,
    one,
    page,
    read,
    render,
    state_of,
    unit,
)

SSE_POLL_SECONDS = 1.0
SSE_MAX_SECONDS = 300.0  # a stream ends after this; the page's EventSource reconnects
CONSOLE_TAIL = 64 * 1024  # the console log's last bytes shown
Row = dict[str, object]

router = APIRouter()


# -- nodes --------------------------------------------------------------------------------


@router.get("/system/nodes")
@page
def nodes_page(request: Request) -> Response:
    """Nodes by hostname (filter by a hostname's start and template), paged by
    (hostname, id), with their instances counted in one grouped read; bulk:
    provision an instance of each selected node."""
    s, actor = actor_of(request)
    template = request.query_params.get("template") or ""
    host = request.query_params.get("hostname") or ""
    after = request.query_params.get("after") or ""
    after_host, _, after_id = after.partition("|")
    with read(request, actor) as ctx:
        actor.require("read", "listing nodes")
        q = (
            select(Node, NodeTemplate.name)
            .join(NodeTemplate, NodeTemplate.id == Node.template_id)
            .where(Node.account == actor.account)
        )
        if template:
            q = q.where(NodeTemplate.name == template)
        if host:
            q = q.where(Node.hostname.startswith(host, autoescape=True))
        if after:
            q = q.where(
                (Node.hostname > after_host)
                | ((Node.hostname == after_host) & (Node.id > after_id))
            )
        rows = ctx.session.execute(q.order_by(Node.hostname, Node.id).limit(PAGE + 1)).all()
        ids = [n.id for n, _t in rows[:PAGE]]
        counted = (
            select(NodeInstance.node_id, NodeInstance.status, func.count())
            .where(NodeInstance.node_id.in_(ids))
            .group_by(NodeInstance.node_id, NodeInstance.status)
        )
        counts: dict[str, dict[str, int]] = {i: {} for i in ids}
        for node_id, status, n in ctx.session.execute(counted):
            counts[node_id][status] = n
        shown: list[Row] = [
            {"id": n.id, "hostname": n.hostname, "template": t, "created_at": n.created_at,
             "instances": counts[n.id]}
            for n, t in rows[:PAGE]
        ]  # fmt: skip
    nxt = f"{shown[-1]['hostname']}|{shown[-1]['id']}" if len(rows) > PAGE else None
    return render(
        request, "nodes.html", csrf=s.csrf, actor=actor, nodes=shown, template=template,
        hostname=host, next_after=nxt,
    )  # fmt: skip


async def nodes_provision(request: Request) -> Response:
    """Provision an instance of each selected node, each in its own unit of work."""
    provider = state_of(request).provider

    def each(ctx: Ctx, node_id: str, _form: Form) -> tuple[str, str]:
        i = nodes.provision_instance(ctx, provider, node_id)
        return i.hostname, f"instance {i.id} {i.status}"

    handler = bulk(lambda _f: "Provisioning", "node", "/app/system/instances", each)
    return await handler(request)


router.add_api_route("/system/nodes/bulk-provision", nodes_provision, methods=["POST"])


# -- instances ------------------------------------------------------------------------


@router.get("/system/instances")
@page
def instances_page(request: Request) -> Response:
    """Instances by hostname, filtered by status, template and a hostname's start,
    paged by (hostname, id)."""
    s, actor = actor_of(request)
    status = request.query_params.get("status") or ""
    template = request.query_params.get("template") or ""
    host = request.query_params.get("hostname") or ""
    after = request.query_params.get("after") or ""
    after_host, _, after_id = after.partition("|")
    with read(request, actor) as ctx:
        actor.require("read", "listing instances")
        q = (
            select(NodeInstance, NodeTemplate.name)
            .join(NodeTemplate, NodeTemplate.id == NodeInstance.template_id)
            .where(NodeTemplate.account == actor.account)
        )
        if status:
            q = q.where(NodeInstance.status == status)
        if template:
            q = q.where(NodeTemplate.name == template)
        if host:
            q = q.where(NodeInstance.hostname.startswith(host, autoescape=True))
        if after:
            q = q.where(
                (NodeInstance.hostname > after_host)
                | ((NodeInstance.hostname == after_host) & (NodeInstance.id > after_id))
            )
        q = q.order_by(NodeInstance.hostname, NodeInstance.id).limit(PAGE + 1)
        rows = ctx.session.execute(q).all()
        shown: list[Row] = [
            {"id": i.id, "hostname": i.hostname, "status": i.status, "template": t,
             "last_heartbeat_at": i.last_heartbeat_at,
             "modules": len(i.running_module_digests or {})}
            for i, t in rows[:PAGE]
        ]  # fmt: skip
    nxt = f"{shown[-1]['hostname']}|{shown[-1]['id']}" if len(rows) > PAGE else None
    return render(
        request, "instances.html", csrf=s.csrf, actor=actor, instances=shown,
        statuses=[x.value for x in InstanceStatus], status=status, template=template,
        hostname=host, next_after=nxt,
    )  # fmt: skip


@router.post("/system/nodes")
@action
def node_create(request: Request, actor: Actor, form: Form) -> str:
    with unit(request, actor) as ctx:
        nodes.create_node(ctx, one(form, "hostname"), one(form, "template"))
    return "/app/system/instances"


@router.post("/system/instances")
@action
def instance_provision(request: Request, actor: Actor, form: Form) -> str:
    provider = state_of(request).provider
    with nodes.undo_on_failure(provider) as started, unit(request, actor) as ctx:
        instance = nodes.provision_instance(ctx, provider, one(form, "node"), started=started)
        iid = instance.id
    return f"/app/system/instances/{iid}"


async def instances_terminate(request: Request) -> Response:
    """Terminate the selected instances, each in its own unit of work."""
    provider = state_of(request).provider

    def each(ctx: Ctx, iid: str, _form: Form) -> tuple[str, str]:
        i = nodes.terminate_instance(ctx, provider, iid)
        return i.hostname, f"now {i.status}"

    handler = bulk(lambda _f: "Termination", "instance", "/app/system/instances", each)
    return await handler(request)


router.add_api_route("/system/instances/bulk-terminate", instances_terminate, methods=["POST"])


def console_log(provider: InstanceProvider, instance: NodeInstance) -> str | None:
    """The instance's console as its provider captured it (its tail), or None when
    the provider captures none. The one place the console page reads it from."""
    if not instance.provider_ref:
        return None
    data = provider.console(instance.provider_ref, CONSOLE_TAIL)
    return None if data is None else data.decode("utf-8", "replace")[-CONSOLE_TAIL:]


@router.get("/system/instances/{instance_id}")
@page
def instance_page(request: Request) -> Response:
    """Drift per module (desired vs running digest), the running digests, the console
    log and the instance's events."""
    s, actor = actor_of(request)
    iid = request.path_params["instance_id"]
    drift = None
    error = None
    with read(request, actor) as ctx:
        instance = nodes.get_instance(ctx, iid)
        try:
            drift = DriftOut.of(instance_drift(ctx, iid)[1])
        except PlatformError as e:
            error = e.detail
        running = sorted((instance.running_module_digests or {}).items())
        q = (
            select(FleetEvent)
            .where(FleetEvent.instance_id == iid)
            .order_by(FleetEvent.occurred_at.desc())
            .limit(200)
        )
        events = [_event_row(e) for e in ctx.session.scalars(q)]
        console = console_log(state_of(request).provider, instance)
        info: Row = {"id": instance.id, "hostname": instance.hostname,
                     "status": instance.status, "provider": instance.provider,
                     "provider_ref": instance.provider_ref or ""}  # fmt: skip
    return render(
        request, "instance.html", csrf=s.csrf, actor=actor, iid=iid, drift=drift,
        error=error, events=events, running=running, console=console, instance=info,
    )  # fmt: skip


def _event_row(e: FleetEvent) -> Row:
    return {
        "id": e.id,
        "kind": e.kind,
        "severity": e.severity,
        "instance": e.instance_id or "",
        "at": e.occurred_at.isoformat(timespec="seconds"),
        "payload": json.dumps(e.payload, sort_keys=True)[:500],
    }


# -- events and audit -------------------------------------------------------------------


@router.get("/system/events")
@page
def events_page(request: Request) -> Response:
    """Fleet events, newest first, filtered by kind, severity and instance, paged by
    keyset; new ones arrive live over server-sent events."""
    s, actor = actor_of(request)
    kind = request.query_params.get("kind") or ""
    severity = request.query_params.get("severity") or ""
    instance = request.query_params.get("instance") or ""
    before = parse_cursor(request.query_params.get("after") or "")
    with read(request, actor) as ctx:
        actor.require("read", "reading fleet events")
        q = select(FleetEvent)
        if kind:
            q = q.where(FleetEvent.kind == kind)
        if severity:
            q = q.where(FleetEvent.severity == severity)
        if instance:
            q = q.where(FleetEvent.instance_id == instance)
        if before is not None:
            at, eid = before
            q = q.where(
                (FleetEvent.occurred_at < at)
                | ((FleetEvent.occurred_at == at) & (FleetEvent.id > eid))
            )
        q = q.order_by(FleetEvent.occurred_at.desc(), FleetEvent.id).limit(PAGE + 1)
        found = list(ctx.session.scalars(q))
        events = [_event_row(e) for e in found[:PAGE]]
        nxt = cursor(found[PAGE - 1].occurred_at, found[PAGE - 1].id) if len(found) > PAGE else None
    return render(
        request, "events.html", csrf=s.csrf, actor=actor, events=events, kind=kind,
        severity=severity, instance=instance, next_after=nxt,
        live=not (kind or severity or instance or before),
    )  # fmt: skip


@router.get("/system/events/stream")
async def events_stream(request: Request) -> Response:
    """Fleet events as server-sent events, newest after the page's last one; the
    stream ends after a bounded time and the browser's EventSource reconnects."""
    try:
        _s, actor = await asyncio.to_thread(actor_of, request)
    except Login:
        return Response(status_code=401)
    state = state_of(request)
    since_param = request.headers.get("last-event-id") or request.query_params.get("since")

    def newer(since: datetime | None) -> list[FleetEvent]:
        # A read-only session: a stream never takes SQLite's write lock.
        with Session(state.engine, expire_on_commit=False) as db:
            q = select(FleetEvent).order_by(FleetEvent.occurred_at, FleetEvent.id).limit(100)
            if since is not None:
                q = q.where(FleetEvent.occurred_at > since)
            rows = list(db.scalars(q))
            db.expunge_all()
            return rows

    async def stream() -> AsyncIterator[bytes]:
        since = datetime.fromisoformat(since_param) if since_param else state.clock()
        started = time.monotonic()
        yield b"retry: 2000\n\n"
        while time.monotonic() - started < SSE_MAX_SECONDS:
            if await request.is_disconnected():
                return
            for e in await asyncio.to_thread(newer, since):
                since = e.occurred_at
                doc = json.dumps(_event_row(e))
                yield f"id: {e.occurred_at.isoformat()}\nevent: fleet\ndata: {doc}\n\n".encode()
            await asyncio.sleep(SSE_POLL_SECONDS)

    actor.require("read", "reading fleet events")
    resp = StreamingResponse(stream(), media_type="text/event-stream")
    return headers(resp)


@router.get("/system/audit")
@page
def audit_page(request: Request) -> Response:
    """The audit log, newest first, filtered by action and actor, paged by keyset."""
    s, actor = actor_of(request)
    action_ = request.query_params.get("action") or ""
    who = request.query_params.get("actor") or ""
    before = parse_cursor(request.query_params.get("after") or "")
    with read(request, actor) as ctx:
        actor.require("read", "reading the audit log")
        found = audit.list_entries(
            ctx, action=action_ or None, actor=who or None, before=before, limit=PAGE + 1
        )
        rows: list[Row] = [
            {"at": e.at, "actor": e.actor, "action": e.action, "summary": e.summary}
            for e in found[:PAGE]
        ]
        nxt = cursor(found[PAGE - 1].at, found[PAGE - 1].id) if len(found) > PAGE else None
    return render(
        request, "audit.html", csrf=s.csrf, actor=actor, entries=rows, action=action_,
        who=who, next_after=nxt,
    )  # fmt: skip
