"""Console pages of templates: the list (bulk: assign a module), a template's
composition preview (which module wins each path, protected owners, conflicts)
and its assignments with priority overrides (bulk: unassign)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from powernode.platform.api.schemas.desired import TemplateCompositionOut
from powernode.platform.db.templates import NodeModuleAssignment, NodeTemplate
from powernode.platform.problems import InvalidInputError, PlatformError
from powernode.platform.services import templates
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.desired import desired_set
from powernode.platform.ui.core import (
    PAGE,
    Form,
    action,
    actor_of,
    bulk,
    one,
    page,
    read,
    render,
    unit,
)

router = APIRouter()


# -- templates ------------------------------------------------------------------------


@router.get("/system/templates")
@page
def templates_page(request: Request) -> Response:
    """Templates by name (filter by a name's start), paged by name, with their
    assignment counts in one grouped read; bulk: assign a module to the selected."""
    s, actor = actor_of(request)
    prefix = request.query_params.get("name") or ""
    after = request.query_params.get("after") or ""
    with read(request, actor) as ctx:
        actor.require("read", "listing templates")
        q = select(NodeTemplate).where(
            NodeTemplate.account == actor.account, NodeTemplate.name > after
        )
        if prefix:
            q = q.where(NodeTemplate.name.startswith(prefix, autoescape=True))
        found = list(ctx.session.scalars(q.order_by(NodeTemplate.name).limit(PAGE + 1)))
        ids = [t.id for t in found[:PAGE]]
        grouped = (
            select(NodeModuleAssignment.template_id, func.count())
            .where(NodeModuleAssignment.template_id.in_(ids))
            .group_by(NodeModuleAssignment.template_id)
        )
        counts: dict[str, int] = {tid: n for tid, n in ctx.session.execute(grouped)}
        rows = [
            {"name": t.name, "description": t.description, "assignments": counts.get(t.id, 0)}
            for t in found[:PAGE]
        ]
    return render(
        request, "templates.html", csrf=s.csrf, actor=actor, templates=rows, name=prefix,
        next_after=rows[-1]["name"] if len(found) > PAGE else None,
    )  # fmt: skip


def _assign_one(ctx: Ctx, template: str, form: Form) -> tuple[str, str]:
    module = one(form, "module")
    override = _priority(one(form, "effective_priority"))
    templates.assign_module(ctx, template, module, effective_priority_override=override)
    return template, f"{module} assigned"


router.add_api_route(
    "/system/templates/bulk-assign",
    bulk(lambda f: f"Assign {one(f, 'module')}", "template", "/app/system/templates",
         _assign_one),
    methods=["POST"],
)  # fmt: skip


@router.get("/system/templates/{name}")
@page
def template_page(request: Request) -> Response:
    """Composition preview (which module wins each path, what is dropped and why) and
    the assignments with their priority overrides."""
    s, actor = actor_of(request)
    name = request.path_params["name"]
    error = None
    composition = None
    with read(request, actor) as ctx:
        assignments = [
            {"id": a.id, "module": a.module.name, "priority": a.priority,
             "override": a.effective_priority, "resolved": templates.resolved_priority(a)}
            for a in templates.list_assignments(ctx, name)
        ]  # fmt: skip
        try:
            composition = TemplateCompositionOut.of(desired_set(ctx, name))
        except PlatformError as e:
            error = e.detail
    return render(
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
def template_assign(request: Request, actor: Actor, form: Form) -> str:
    name = request.path_params["name"]
    override = _priority(one(form, "effective_priority"))
    with unit(request, actor) as ctx:
        templates.assign_module(
            ctx, name, one(form, "module"), effective_priority_override=override
        )
    return f"/app/system/templates/{quote(name)}"


async def template_unassign(request: Request) -> Response:
    """Unassign the selected modules from the template, each in its own unit of work."""
    name = request.path_params["name"]

    def each(ctx: Ctx, module: str, _form: Form) -> tuple[str, str]:
        templates.unassign_module(ctx, name, module)
        return module, f"unassigned from {name}"

    back = f"/app/system/templates/{quote(name)}"
    return await bulk(lambda _f: f"Unassign from {name}", "module", back, each)(request)


router.add_api_route("/system/templates/{name}/bulk-unassign", template_unassign, methods=["POST"])


@router.post("/system/assignments/{assignment_id}")
@action
def assignment_update(request: Request, actor: Actor, form: Form) -> str:
    aid = request.path_params["assignment_id"]
    raw = one(form, "effective_priority")
    if raw and not (raw.isdigit() and int(raw) <= 100_000):
        raise InvalidInputError(
            f"priority override {raw!r}: a whole number from 0 to 100000, or empty to clear it"
        )
    with unit(request, actor) as ctx:
        a = templates.get_assignment(ctx, aid)
        template = a.template.name
        templates.update_assignment(ctx, aid, effective_priority_override=int(raw) if raw else None)
    return f"/app/system/templates/{quote(template)}"
