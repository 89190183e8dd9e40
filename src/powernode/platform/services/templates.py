"""Templates and their module assignments (seed 003 phase 7)."""

from __future__ import annotations

import logging
from enum import Enum
from typing import Final

from sqlalchemy import select

from powernode.core.priority import Variety, effective_priority
from powernode.platform.db import NodeModuleAssignment, NodeTemplate
from powernode.platform.problems import ConflictError, NotFoundError
from powernode.platform.services import audit
from powernode.platform.services.catalog import get_module
from powernode.platform.services.context import WRITE, Ctx

log = logging.getLogger(__name__)


def list_templates(ctx: Ctx) -> list[NodeTemplate]:
    q = select(NodeTemplate).where(NodeTemplate.account == ctx.actor.account)
    return list(ctx.session.scalars(q.order_by(NodeTemplate.name)))


def get_template(ctx: Ctx, ref: str) -> NodeTemplate:
    """A template by id or by name (the CLI takes either: ``--template base``)."""
    q = select(NodeTemplate).where(
        NodeTemplate.account == ctx.actor.account,
        (NodeTemplate.id == ref) | (NodeTemplate.name == ref),
    )
    template = ctx.session.scalar(q)
    if template is None:
        known = ", ".join(t.name for t in list_templates(ctx))
        raise NotFoundError(
            f"template {ref!r} not found (by id or name); templates: {known}", template=ref
        )
    return template


def list_assignments(ctx: Ctx, template_ref: str) -> list[NodeModuleAssignment]:
    """The template's stack, highest first: priority, then variety, then name (core.priority)."""
    template = get_template(ctx, template_ref)
    rows = list(template.assignments)
    return sorted(
        rows,
        key=lambda a: (-resolved_priority(a), -Variety(a.module.variety).offset, a.module.name),
    )


def resolved_priority(a: NodeModuleAssignment) -> int:
    return a.effective_priority if a.effective_priority is not None else a.priority


def assign_module(
    ctx: Ctx,
    template_ref: str,
    module_name: str,
    *,
    metadata: dict[str, object] | None = None,
    effective_priority_override: int | None = None,
) -> NodeModuleAssignment:
    """Assign a module to a template; its priority comes from category and variety."""
    ctx.actor.require(WRITE, "assigning a module to a template")
    template = get_template(ctx, template_ref)
    module = get_module(ctx, module_name)
    existing = ctx.session.scalar(
        select(NodeModuleAssignment).where(
            NodeModuleAssignment.template_id == template.id,
            NodeModuleAssignment.module_id == module.id,
        )
    )
    if existing is not None:
        raise ConflictError(
            f"module {module_name!r} is already assigned to template {template.name!r} "
            f"(assignment {existing.id}); change it with: "
            "powernode system update-module-assignment",
            assignment_id=existing.id,
        )
    priority = effective_priority(module.category.position, Variety(module.variety))
    assignment = NodeModuleAssignment(
        template=template,
        module=module,
        priority=priority,
        effective_priority=effective_priority_override,
        assignment_metadata=metadata or {},
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(assignment)
    ctx.session.flush()
    audit.record(
        ctx,
        action="template.assign_module",
        target_type="node_module_assignment",
        target_id=assignment.id,
        summary=f"assigned {module_name} to template {template.name} (priority {priority})",
        detail={
            "template": template.name,
            "module": module_name,
            "priority": priority,
            "effective_priority": effective_priority_override,
            "metadata": metadata or {},
        },
    )
    return assignment


def unassign_module(ctx: Ctx, template_ref: str, module_name: str) -> None:
    ctx.actor.require(WRITE, "unassigning a module from a template")
    template = get_template(ctx, template_ref)
    module = get_module(ctx, module_name)
    assignment = ctx.session.scalar(
        select(NodeModuleAssignment).where(
            NodeModuleAssignment.template_id == template.id,
            NodeModuleAssignment.module_id == module.id,
        )
    )
    if assignment is None:
        raise NotFoundError(f"module {module_name!r} is not assigned to template {template.name!r}")
    audit.record(
        ctx,
        action="template.unassign_module",
        target_type="node_module_assignment",
        target_id=assignment.id,
        summary=f"unassigned {module_name} from template {template.name}",
        detail={"template": template.name, "module": module_name},
    )
    ctx.session.delete(assignment)


def get_assignment(ctx: Ctx, assignment_id: str) -> NodeModuleAssignment:
    a = ctx.session.get(NodeModuleAssignment, assignment_id)
    if a is None or a.template.account != ctx.actor.account:
        raise NotFoundError(
            f"assignment {assignment_id!r} not found; see a template's assignments with: "
            "powernode system get-template TEMPLATE"
        )
    return a


class _Unset(Enum):
    """The default of a parameter whose None means something (clear the override)."""

    UNSET = "unset"


_UNSET: Final = _Unset.UNSET


def update_assignment(
    ctx: Ctx,
    assignment_id: str,
    *,
    effective_priority_override: int | _Unset | None = _UNSET,
    metadata: dict[str, object] | None = None,
) -> NodeModuleAssignment:
    """Override (or, with None, clear) effective_priority; replace metadata when given."""
    ctx.actor.require(WRITE, "updating an assignment")
    a = get_assignment(ctx, assignment_id)
    before = {"effective_priority": a.effective_priority, "metadata": a.assignment_metadata}
    if not isinstance(effective_priority_override, _Unset):
        a.effective_priority = effective_priority_override
    if metadata is not None:
        a.assignment_metadata = metadata
    a.updated_at = ctx.now
    audit.record(
        ctx,
        action="assignment.update",
        target_type="node_module_assignment",
        target_id=a.id,
        summary=f"updated assignment of {a.module.name} in template {a.template.name}",
        detail={
            "before": before,
            "after": {
                "effective_priority": a.effective_priority,
                "metadata": a.assignment_metadata,
            },
        },
    )
    return a
