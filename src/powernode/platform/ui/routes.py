"""The operator's console under ``/app``: server-rendered pages over the services.

Every page calls the same service functions as the REST API, inside the same
unit of work, as the actor its session's token is: scopes, approvals,
compare-and-set promotions and the audit log hold here exactly as there. A
refusal (403, 409, …) is shown on the page with the service's own message.

Lists page by keyset (``after=<last key>``), never by offset, so page 200 of
10,000 instances costs what page 1 does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlparse

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.orm import contains_eager

from powernode import __version__
from powernode.platform.api.deps import PlatformState
from powernode.platform.api.schemas_desired import DriftOut, TemplateCompositionOut
from powernode.platform.db import InstanceStatus, NodeInstance
from powernode.platform.db.catalog import NodeModule, NodeModuleVersion, PromotionApproval
from powernode.platform.db.fleet import FleetEvent
from powernode.platform.db.templates import NodeTemplate
from powernode.platform.problems import AuthenticationError, InvalidInputError, PlatformError
from powernode.platform.services import audit, catalog, nodes, promotion, templates, tokens
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.desired import desired_set
from powernode.platform.services.drift import instance_drift
from powernode.platform.ui import session as sess

HERE = Path(__file__).parent
PAGE = 50
MAX_BULK = 200
STATES = ("built", "staging", "blessed", "live", "retired")
SSE_POLL_SECONDS = 1.0
SSE_MAX_SECONDS = 300.0  # a stream ends after this; the page's EventSource reconnects

router = APIRouter(prefix="/app", include_in_schema=False)
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

T = TypeVar("T")

# Strict: no inline script or style, nothing from elsewhere; the interaction
# layer is /app/static/app.js, ours.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _state(request: Request) -> PlatformState:
    state = request.app.state.platform
    assert isinstance(state, PlatformState)
    return state


class _Login(Exception):
    """No usable session: go to the login page."""


def _session(request: Request) -> sess.UiSession:
    s = sess.open_cookie(_state(request).sealer, request.cookies.get(sess.COOKIE))
    if s is None:
        raise _Login
    return s


def _actor(request: Request) -> tuple[sess.UiSession, Actor]:
    s = _session(request)
    state = _state(request)
    try:
        with state.sessions() as db:
            return s, tokens.authenticate(db, s.token, state.clock())
    except AuthenticationError as e:
        raise _Login from e


def _render(request: Request, page_name: str, code: int = 200, /, **ctx: object) -> Response:
    html = _env.get_template(page_name).render(request=request, version=__version__, **ctx)
    return _headers(HTMLResponse(html, status_code=code))


def _redirect(url: str) -> Response:
    return _headers(RedirectResponse(url, status_code=303))


def _to_login(request: Request) -> Response:
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect(f"/app/login?next={quote(nxt)}")


@contextmanager
def _unit(request: Request, actor: Actor) -> Iterator[Ctx]:
    with _state(request).unit(actor) as ctx:
        yield ctx


def page(fn: Callable[..., Response]) -> Callable[..., Any]:
    """A page handler: a missing or dead session goes to the login page."""

    async def wrapper(request: Request) -> Response:
        try:
            return await asyncio.to_thread(fn, request)
        except _Login:
            return _to_login(request)
        except PlatformError as e:  # not found, not allowed: the service's own words
            return _render(
                request, "error.html", e.status, title=f"{e.status} {e.title}", message=e.detail
            )

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


async def _form(request: Request, s: sess.UiSession) -> dict[str, list[str]]:
    """The posted form, after the Origin and CSRF checks."""
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.url.netloc:
        raise PermissionError("a form posted from another site")
    form = await request.form()
    if not s.check_csrf(str(form.get("csrf") or "")):
        raise PermissionError("the form's CSRF token does not match this session; reload the page")
    return {k: [str(v) for v in form.getlist(k)] for k in form}


async def _posted(
    request: Request,
) -> tuple[sess.UiSession, Actor, dict[str, list[str]]] | Response:
    """A POST's session, actor and checked form, or the response that refuses it
    (the login page, or 403 for a cross-site or CSRF-less form)."""
    try:
        s, actor = await asyncio.to_thread(_actor, request)
    except _Login:
        return _to_login(request)
    try:
        form = await _form(request, s)
    except PermissionError as e:
        return _render(request, "error.html", 403, title="Refused", message=str(e), csrf=s.csrf)
    return s, actor, form


def action(fn: Callable[[Request, Actor, dict[str, list[str]]], str]) -> Callable[..., Any]:
    """A POST handler: checks session and CSRF, runs ``fn`` (which returns where to go),
    and shows the service's refusal on an error page."""

    async def wrapper(request: Request) -> Response:
        checked = await _posted(request)
        if isinstance(checked, Response):
            return checked
        s, actor, form = checked
        try:
            where = await asyncio.to_thread(fn, request, actor, form)
        except PlatformError as e:
            return _render(
                request, "error.html", e.status, title=f"{e.status} {e.title}",
                message=e.detail, csrf=s.csrf, actor=actor,
            )  # fmt: skip
        return _redirect(where)

    wrapper.__name__ = fn.__name__
    return wrapper


def _one(form: dict[str, list[str]], key: str, default: str = "") -> str:
    values = form.get(key) or [default]
    return values[0].strip()


# -- login --------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def home() -> Response:
    return _redirect("/app/system/modules")


def _safe_next(value: str | None) -> str:
    # Only a path on this site: never an absolute or scheme-relative URL.
    if value and value.startswith("/app") and not value.startswith("//"):
        return value
    return "/app/system/modules"


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _render(request, "login.html", next=_safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    token = str(form.get("token") or "").strip()
    nxt = _safe_next(str(form.get("next") or ""))
    state = _state(request)

    def check() -> Actor:
        with state.sessions() as db:
            return tokens.authenticate(db, token, state.clock())

    try:
        actor = await asyncio.to_thread(check)
    except AuthenticationError as e:
        return _render(request, "login.html", 401, next=nxt, error=e.detail)
    s = sess.new_session(token)
    resp = _redirect(nxt)
    resp.set_cookie(
        sess.COOKIE, sess.seal(state.sealer, s), max_age=sess.LIFETIME_SECONDS, path="/app",
        httponly=True, secure=request.url.scheme == "https", samesite="strict",
    )  # fmt: skip
    resp.headers["X-Powernode-Actor"] = actor.name
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    resp = _redirect("/app/login")
    resp.delete_cookie(sess.COOKIE, path="/app")
    return resp


# -- modules and versions -----------------------------------------------------------


@router.get("/system/modules")
@page
def modules_page(request: Request) -> Response:
    """Modules, filtered by category, paged by name."""
    s, actor = _actor(request)
    category = request.query_params.get("category") or None
    after = request.query_params.get("after") or ""
    with _unit(request, actor) as ctx:
        q = select(NodeModule).where(NodeModule.account == actor.account, NodeModule.name > after)
        if category:
            q = q.where(NodeModule.category.has(slug=category))
        rows = list(ctx.session.scalars(q.order_by(NodeModule.name).limit(PAGE + 1)))
        categories = [c.slug for c in catalog.list_categories(ctx)]
        # Version counts per state for the page's modules in one grouped read, not
        # one lazy load of every module's versions.
        ids = [m.id for m in rows[:PAGE]]
        counts: dict[str, dict[str, int]] = {i: {} for i in ids}
        grouped = (
            select(NodeModuleVersion.module_id, NodeModuleVersion.promotion_state, func.count())
            .where(NodeModuleVersion.module_id.in_(ids))
            .group_by(NodeModuleVersion.module_id, NodeModuleVersion.promotion_state)
        )
        for module_id, state_, n in ctx.session.execute(grouped):
            counts[module_id][state_] = n
        shown = [_module_row(m, counts[m.id]) for m in rows[:PAGE]]
    return _render(
        request, "modules.html", csrf=s.csrf, actor=actor, modules=shown,
        categories=categories, category=category or "",
        next_after=shown[-1]["name"] if len(rows) > PAGE else None,
    )  # fmt: skip


def _module_row(m: NodeModule, states: dict[str, int]) -> dict[str, object]:
    return {
        "name": m.name,
        "category": m.category.slug,
        "variety": m.variety,
        "require_approval": m.require_approval,
        "versions": sum(states.values()),
        "states": states,
    }


@router.get("/system/modules/new")
@page
def module_new_page(request: Request) -> Response:
    s, actor = _actor(request)
    with _unit(request, actor) as ctx:
        categories = [c.slug for c in catalog.list_categories(ctx)]
    return _render(request, "module_new.html", csrf=s.csrf, actor=actor, categories=categories)


@router.post("/system/modules/new")
@action
def module_create(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    name = _one(form, "name")
    with _unit(request, actor) as ctx:
        catalog.create_module(
            ctx,
            _state(request).sealer,
            name=name,
            category_slug=_one(form, "category"),
            variety=_one(form, "variety", "subscription"),
            description=_one(form, "description"),
            policy=catalog.TrustPolicy(
                cosign_identity_regexp=_one(form, "cosign_identity_regexp") or None,
                cosign_issuer_regexp=_one(form, "cosign_issuer_regexp") or None,
                cosign_public_key=_one(form, "cosign_public_key") or None,
            ),
            require_approval=_one(form, "require_approval") == "on",
        )
    return f"/app/system/modules/{quote(name)}"


@router.get("/system/modules/{name}")
@page
def module_page(request: Request) -> Response:
    """A module's versions with promote/demote/approve, and each version's approvals."""
    s, actor = _actor(request)
    name = request.path_params["name"]
    with _unit(request, actor) as ctx:
        module = catalog.get_module(ctx, name)
        versions = catalog.list_versions(ctx, name)
        ids = [v.id for v in versions]
        approvals: dict[str, list[dict[str, object]]] = {i: [] for i in ids}
        q = select(PromotionApproval).where(PromotionApproval.version_id.in_(ids))
        for a in ctx.session.scalars(q.order_by(PromotionApproval.approved_at)):
            approvals[a.version_id].append(
                {"by": a.approved_by, "at": a.approved_at, "used": a.used_at is not None,
                 "note": a.note}
            )  # fmt: skip
        rows = [_version_row(v) for v in versions]
        states: dict[str, int] = {}
        for v in versions:
            states[v.promotion_state] = states.get(v.promotion_state, 0) + 1
        info = _module_row(module, states)
    return _render(
        request, "module.html", csrf=s.csrf, actor=actor, module=info, versions=rows,
        approvals=approvals, states=STATES,
    )  # fmt: skip


def _version_row(v: NodeModuleVersion) -> dict[str, object]:
    return {
        "id": v.id,
        "module": v.module.name,
        "version": v.version_string,
        "state": v.promotion_state,
        "digest": v.composefs_digest or "",
        "verified": v.cosign_verified,
        "created_at": v.created_at,
        "promoted_at": v.promoted_at,
    }


@router.get("/system/versions")
@page
def versions_page(request: Request) -> Response:
    """Every version, filtered by state and module, with bulk promotion."""
    s, actor = _actor(request)
    state = request.query_params.get("state") or ""
    module = request.query_params.get("module") or ""
    after = request.query_params.get("after") or ""
    with _unit(request, actor) as ctx:
        q = (
            select(NodeModuleVersion)
            .join(NodeModuleVersion.module)
            .options(contains_eager(NodeModuleVersion.module))
            .where(NodeModule.account == actor.account, NodeModuleVersion.id > after)
        )
        if state:
            q = q.where(NodeModuleVersion.promotion_state == state)
        if module:
            q = q.where(NodeModule.name == module)
        rows = list(ctx.session.scalars(q.order_by(NodeModuleVersion.id).limit(PAGE + 1)))
        shown = [_version_row(v) for v in rows[:PAGE]]
    return _render(
        request, "versions.html", csrf=s.csrf, actor=actor, versions=shown, states=STATES,
        state=state, module=module, next_after=shown[-1]["id"] if len(rows) > PAGE else None,
    )  # fmt: skip


@router.post("/system/versions/{version_id}/promote")
@action
def version_promote(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    vid = request.path_params["version_id"]
    with _unit(request, actor) as ctx:
        v = promotion.promote(ctx, vid, _one(form, "to"), note=_one(form, "note"))
        name = v.module.name
    return f"/app/system/modules/{quote(name)}"


@router.post("/system/versions/{version_id}/approve")
@action
def version_approve(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    vid = request.path_params["version_id"]
    with _unit(request, actor) as ctx:
        promotion.approve(ctx, vid, note=_one(form, "note"))
        name = catalog.get_version(ctx, vid).module.name
    return f"/app/system/modules/{quote(name)}"


@router.post("/system/versions/bulk")
async def versions_bulk(request: Request) -> Response:
    """Promote the selected versions, each in its own unit of work: one refusal stops
    only that version, and the page lists what happened to each."""
    checked = await _posted(request)
    if isinstance(checked, Response):
        return checked
    s, actor, form = checked
    ids = form.get("version", [])[:MAX_BULK]
    to = _one(form, "bulk_to")

    def run() -> list[dict[str, str]]:
        results = []
        for vid in ids:
            try:
                with _unit(request, actor) as ctx:
                    v = promotion.promote(ctx, vid, to, note="bulk from the console")
                    results.append(
                        {"id": vid, "what": f"{v.module.name} {v.version_string}", "ok": "yes",
                         "detail": f"now {v.promotion_state}"}
                    )  # fmt: skip
            except PlatformError as e:
                results.append({"id": vid, "what": vid, "ok": "", "detail": e.detail})
        return results

    results = await asyncio.to_thread(run)
    return _render(request, "bulk.html", csrf=s.csrf, actor=actor, results=results, to=to)


# -- templates ------------------------------------------------------------------------


@router.get("/system/templates")
@page
def templates_page(request: Request) -> Response:
    s, actor = _actor(request)
    with _unit(request, actor) as ctx:
        rows = [
            {"name": t.name, "description": t.description, "assignments": len(t.assignments)}
            for t in templates.list_templates(ctx)
        ]
    return _render(request, "templates.html", csrf=s.csrf, actor=actor, templates=rows)


@router.get("/system/templates/{name}")
@page
def template_page(request: Request) -> Response:
    """Composition preview (which module wins each path, what is dropped and why) and
    the assignments with their priority overrides."""
    s, actor = _actor(request)
    name = request.path_params["name"]
    error = None
    composition = None
    with _unit(request, actor) as ctx:
        assignments = [
            {"id": a.id, "module": a.module.name, "priority": a.priority,
             "override": a.effective_priority, "resolved": templates.resolved_priority(a)}
            for a in templates.list_assignments(ctx, name)
        ]  # fmt: skip
        try:
            composition = TemplateCompositionOut.of(desired_set(ctx, name))
        except PlatformError as e:
            error = e.detail
    return _render(
        request, "template.html", csrf=s.csrf, actor=actor, name=name,
        assignments=assignments, composition=composition, error=error,
    )  # fmt: skip


def _priority(raw: str) -> int | None:
    if raw and not (raw.isdigit() and int(raw) <= 100_000):
        raise InvalidInputError(
            f"priority override {raw!r}: a whole number from 0 to 100000, or empty for none"
        )
    return int(raw) if raw else None


@router.post("/system/templates/{name}/assignments")
@action
def template_assign(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    name = request.path_params["name"]
    override = _priority(_one(form, "effective_priority"))
    with _unit(request, actor) as ctx:
        templates.assign_module(
            ctx, name, _one(form, "module"), effective_priority_override=override
        )
    return f"/app/system/templates/{quote(name)}"


@router.post("/system/assignments/{assignment_id}")
@action
def assignment_update(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    aid = request.path_params["assignment_id"]
    raw = _one(form, "effective_priority")
    if raw and not (raw.isdigit() and int(raw) <= 100_000):
        raise InvalidInputError(
            f"priority override {raw!r}: a whole number from 0 to 100000, or empty to clear it"
        )
    with _unit(request, actor) as ctx:
        a = templates.get_assignment(ctx, aid)
        template = a.template.name
        templates.update_assignment(ctx, aid, effective_priority_override=int(raw) if raw else None)
    return f"/app/system/templates/{quote(template)}"


# -- instances ------------------------------------------------------------------------


@router.get("/system/instances")
@page
def instances_page(request: Request) -> Response:
    """Instances by hostname, filtered by status and template, paged by (hostname, id)."""
    s, actor = _actor(request)
    status = request.query_params.get("status") or ""
    template = request.query_params.get("template") or ""
    after = request.query_params.get("after") or ""
    after_host, _, after_id = after.partition("|")
    with _unit(request, actor) as ctx:
        q = (
            select(NodeInstance, NodeTemplate.name)
            .join(NodeTemplate, NodeTemplate.id == NodeInstance.template_id)
            .where(NodeTemplate.account == actor.account)
        )
        if status:
            q = q.where(NodeInstance.status == status)
        if template:
            q = q.where(NodeTemplate.name == template)
        if after:
            q = q.where(
                (NodeInstance.hostname > after_host)
                | ((NodeInstance.hostname == after_host) & (NodeInstance.id > after_id))
            )
        q = q.order_by(NodeInstance.hostname, NodeInstance.id).limit(PAGE + 1)
        rows = ctx.session.execute(q).all()
        shown = [
            {"id": i.id, "hostname": i.hostname, "status": i.status, "template": t,
             "last_heartbeat_at": i.last_heartbeat_at,
             "modules": len(i.running_module_digests or {})}
            for i, t in rows[:PAGE]
        ]  # fmt: skip
    nxt = f"{shown[-1]['hostname']}|{shown[-1]['id']}" if len(rows) > PAGE else None
    return _render(
        request, "instances.html", csrf=s.csrf, actor=actor, instances=shown,
        statuses=[x.value for x in InstanceStatus], status=status, template=template,
        next_after=nxt,
    )  # fmt: skip


@router.post("/system/nodes")
@action
def node_create(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    with _unit(request, actor) as ctx:
        nodes.create_node(ctx, _one(form, "hostname"), _one(form, "template"))
    return "/app/system/instances"


@router.post("/system/instances")
@action
def instance_provision(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    with _unit(request, actor) as ctx:
        instance = nodes.provision_instance(ctx, _state(request).provider, _one(form, "node"))
        iid = instance.id
    return f"/app/system/instances/{iid}"


@router.post("/system/instances/bulk-terminate")
@action
def instances_terminate(request: Request, actor: Actor, form: dict[str, list[str]]) -> str:
    ids = form.get("instance", [])[:MAX_BULK]
    if not ids:
        raise InvalidInputError("select at least one instance to terminate")
    with _unit(request, actor) as ctx:
        for iid in ids:
            nodes.terminate_instance(ctx, _state(request).provider, iid)
    return "/app/system/instances"


@router.get("/system/instances/{instance_id}")
@page
def instance_page(request: Request) -> Response:
    """Drift per module (desired vs running digest) and the instance's event log."""
    s, actor = _actor(request)
    iid = request.path_params["instance_id"]
    drift = None
    error = None
    with _unit(request, actor) as ctx:
        try:
            drift = DriftOut.of(instance_drift(ctx, iid)[1])
        except PlatformError as e:
            error = e.detail
        q = (
            select(FleetEvent)
            .where(FleetEvent.instance_id == iid)
            .order_by(FleetEvent.occurred_at.desc())
            .limit(200)
        )
        events = [_event_row(e) for e in ctx.session.scalars(q)]
    return _render(
        request, "instance.html", csrf=s.csrf, actor=actor, iid=iid, drift=drift,
        error=error, events=events,
    )  # fmt: skip


def _event_row(e: FleetEvent) -> dict[str, object]:
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
    s, actor = _actor(request)
    with _unit(request, actor) as ctx:
        actor.require("read", "reading fleet events")
        q = select(FleetEvent).order_by(FleetEvent.occurred_at.desc(), FleetEvent.id).limit(PAGE)
        events = [_event_row(e) for e in ctx.session.scalars(q)]
    return _render(request, "events.html", csrf=s.csrf, actor=actor, events=events)


@router.get("/system/events/stream")
async def events_stream(request: Request) -> Response:
    """Fleet events as server-sent events, newest after the page's last one; the
    stream ends after a bounded time and the browser's EventSource reconnects."""
    try:
        _s, actor = await asyncio.to_thread(_actor, request)
    except _Login:
        return Response(status_code=401)
    state = _state(request)
    since_param = request.headers.get("last-event-id") or request.query_params.get("since")

    def newer(since: datetime | None) -> list[FleetEvent]:
        with state.sessions() as db:
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
    return _headers(resp)


@router.get("/system/audit")
@page
def audit_page(request: Request) -> Response:
    s, actor = _actor(request)
    action_ = request.query_params.get("action") or None
    with _unit(request, actor) as ctx:
        rows = [
            {"at": e.at, "actor": e.actor, "action": e.action, "summary": e.summary}
            for e in audit.list_entries(ctx, action=action_, limit=200)
        ]
    return _render(request, "audit.html", csrf=s.csrf, actor=actor, entries=rows,
                   action=action_ or "")  # fmt: skip


@router.get("/static/{name}")
async def static(name: str) -> Response:
    kinds = {"app.js": "text/javascript", "app.css": "text/css"}
    if name not in kinds:
        return Response(status_code=404)
    resp = Response((HERE / "static" / name).read_bytes(), media_type=kinds[name])
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
