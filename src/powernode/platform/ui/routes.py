"""The operator's console under ``/app``: server-rendered pages over the services.

Every page calls the same service functions as the REST API, inside the same
unit of work, as the actor its session's token is: scopes, approvals,
compare-and-set promotions and the audit log hold here exactly as there. A
refusal (403, 409, …) is shown on the page with the service's own message.
Pages read in read-only units (ui/core.py); actions write.

Lists page by keyset (``after=<last key>``), never by offset, so page 200 of
10,000 instances costs what page 1 does; every list has filters, and bulk
selection with the actions that list allows (ui/core.py's ``bulk``).

This module: login, modules, versions; ui/composition.py: templates, the
composition preview, assignments; ui/fleet.py: nodes, instances, events,
audit; ui/access.py: bootstrap tokens, webhook deliveries.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import contains_eager

from powernode.platform.db.catalog import NodeModule, NodeModuleVersion, PromotionApproval
from powernode.platform.problems import AuthenticationError
from powernode.platform.services import catalog, promotion
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.ui import access, composition, fleet
from powernode.platform.ui import session as sess
from powernode.platform.ui.core import (
    HERE,
    PAGE,
    Form,
    action,
    actor_of,
    authenticate,
    bulk,
    one,
    page,
    read,
    redirect,
    render,
    state_of,
    unit,
)

STATES = ("built", "staging", "blessed", "live", "retired")
Row = dict[str, object]

router = APIRouter(prefix="/app", include_in_schema=False)


# -- login --------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def home() -> Response:
    return redirect("/app/system/modules")


def _safe_next(value: str | None) -> str:
    # Only a path on this site: never an absolute or scheme-relative URL.
    if value and value.startswith("/app") and not value.startswith("//"):
        return value
    return "/app/system/modules"


@router.get("/login")
async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=_safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    token = str(form.get("token") or "").strip()
    nxt = _safe_next(str(form.get("next") or ""))
    state = state_of(request)

    try:
        actor = await asyncio.to_thread(authenticate, state, token)
    except AuthenticationError as e:
        return render(request, "login.html", 401, next=nxt, error=e.detail)
    s = sess.new_session(token)
    resp = redirect(nxt)
    resp.set_cookie(
        sess.COOKIE, sess.seal(state.sealer, s), max_age=sess.LIFETIME_SECONDS, path="/app",
        httponly=True, secure=request.url.scheme == "https", samesite="strict",
    )  # fmt: skip
    resp.headers["X-Powernode-Actor"] = actor.name
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    resp = redirect("/app/login")
    resp.delete_cookie(sess.COOKIE, path="/app")
    return resp


# -- modules and versions -----------------------------------------------------------


@router.get("/system/modules")
@page
def modules_page(request: Request) -> Response:
    """Modules, filtered by category, paged by name."""
    s, actor = actor_of(request)
    category = request.query_params.get("category") or None
    after = request.query_params.get("after") or ""
    with read(request, actor) as ctx:
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
    return render(
        request, "modules.html", csrf=s.csrf, actor=actor, modules=shown,
        categories=categories, category=category or "",
        next_after=shown[-1]["name"] if len(rows) > PAGE else None,
    )  # fmt: skip


def _module_row(m: NodeModule, states: dict[str, int]) -> Row:
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
    s, actor = actor_of(request)
    with read(request, actor) as ctx:
        categories = [c.slug for c in catalog.list_categories(ctx)]
    return render(request, "module_new.html", csrf=s.csrf, actor=actor, categories=categories)


@router.post("/system/modules/new")
@action
def module_create(request: Request, actor: Actor, form: Form) -> str:
    name = one(form, "name")
    with unit(request, actor) as ctx:
        catalog.create_module(
            ctx,
            state_of(request).sealer,
            name=name,
            category_slug=one(form, "category"),
            variety=one(form, "variety", "subscription"),
            description=one(form, "description"),
            policy=catalog.TrustPolicy(
                cosign_identity_regexp=one(form, "cosign_identity_regexp") or None,
                cosign_issuer_regexp=one(form, "cosign_issuer_regexp") or None,
                cosign_public_key=one(form, "cosign_public_key") or None,
            ),
            require_approval=one(form, "require_approval") == "on",
        )
    return f"/app/system/modules/{quote(name)}"


@router.get("/system/modules/{name}")
@page
def module_page(request: Request) -> Response:
    """A module's versions with promote/demote/approve, and each version's approvals."""
    s, actor = actor_of(request)
    name = request.path_params["name"]
    with read(request, actor) as ctx:
        module = catalog.get_module(ctx, name)
        versions = catalog.list_versions(ctx, name)
        ids = [v.id for v in versions]
        approvals: dict[str, list[Row]] = {i: [] for i in ids}
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
    return render(
        request, "module.html", csrf=s.csrf, actor=actor, module=info, versions=rows,
        approvals=approvals, states=STATES,
    )  # fmt: skip


def _version_row(v: NodeModuleVersion) -> Row:
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
    s, actor = actor_of(request)
    state = request.query_params.get("state") or ""
    module = request.query_params.get("module") or ""
    after = request.query_params.get("after") or ""
    with read(request, actor) as ctx:
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
    return render(
        request, "versions.html", csrf=s.csrf, actor=actor, versions=shown, states=STATES,
        state=state, module=module, next_after=shown[-1]["id"] if len(rows) > PAGE else None,
    )  # fmt: skip


@router.post("/system/versions/{version_id}/promote")
@action
def version_promote(request: Request, actor: Actor, form: Form) -> str:
    vid = request.path_params["version_id"]
    with unit(request, actor) as ctx:
        v = promotion.promote(ctx, vid, one(form, "to"), note=one(form, "note"))
        name = v.module.name
    return f"/app/system/modules/{quote(name)}"


@router.post("/system/versions/{version_id}/approve")
@action
def version_approve(request: Request, actor: Actor, form: Form) -> str:
    vid = request.path_params["version_id"]
    with unit(request, actor) as ctx:
        promotion.approve(ctx, vid, note=one(form, "note"))
        name = catalog.get_version(ctx, vid).module.name
    return f"/app/system/modules/{quote(name)}"


def _promote_one(ctx: Ctx, vid: str, form: Form) -> tuple[str, str]:
    to = one(form, "bulk_to")
    if one(form, "op") == "demote":
        current = promotion.parse_state(catalog.get_version(ctx, vid).promotion_state)
        to = promotion.previous_state(current).value
    v = promotion.promote(ctx, vid, to, note="bulk from the console")
    return f"{v.module.name} {v.version_string}", f"now {v.promotion_state}"


def _promotion_title(form: Form) -> str:
    if one(form, "op") == "demote":
        return "Demotion by one step"
    return f"Promotion to {one(form, 'bulk_to')}"


# Promote the selected versions to one state, or demote each by one step; each in its
# own unit of work: one refusal stops only that version.
router.add_api_route(
    "/system/versions/bulk",
    bulk(_promotion_title, "version", "/app/system/versions", _promote_one),
    methods=["POST"],
)


def _delete_one(ctx: Ctx, name: str, _form: Form) -> tuple[str, str]:
    gone = catalog.delete_module(ctx, name)
    return name, "deleted with " + ", ".join(f"{n} {k}" for k, n in sorted(gone.items()))


router.add_api_route(
    "/system/modules/bulk-delete",
    bulk(lambda _f: "Module deletion", "module", "/app/system/modules", _delete_one),
    methods=["POST"],
)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    kinds = {"app.js": "text/javascript", "app.css": "text/css"}
    if name not in kinds:
        return Response(status_code=404)
    resp = Response((HERE / "static" / name).read_bytes(), media_type=kinds[name])
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


router.include_router(composition.router)
router.include_router(fleet.router)
router.include_router(access.router)
