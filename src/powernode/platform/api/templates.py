"""Templates and assignments: ``/node_templates``, ``/node_module_assignments``."""

from __future__ import annotations

from fastapi import APIRouter, status

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas import (
    AssignmentOut,
    AssignmentUpdate,
    AssignRequest,
    TemplateDetailOut,
    TemplateOut,
)
from powernode.platform.services import rollouts, templates

router = APIRouter(tags=["templates"])


@router.get("/node_templates")
def list_templates(state: State, actor: Reader) -> dict[str, list[TemplateOut]]:
    with state.unit(actor) as ctx:
        return {"templates": [TemplateOut.of(t) for t in templates.list_templates(ctx)]}


@router.get("/node_templates/{template}")
def get_template(template: str, state: State, actor: Reader) -> dict[str, TemplateDetailOut]:
    """A template (by id or name) with its assignments, highest priority first."""
    with state.unit(actor) as ctx:
        t = templates.get_template(ctx, template)
        rows = [AssignmentOut.of(a) for a in templates.list_assignments(ctx, t.id)]
        return {"template": TemplateDetailOut(**TemplateOut.of(t).model_dump(), assignments=rows)}


@router.post("/node_templates/{template}/assignments", status_code=status.HTTP_201_CREATED)
def assign_module(
    template: str, body: AssignRequest, state: State, actor: CurrentActor
) -> dict[str, AssignmentOut]:
    with state.unit(actor) as ctx:
        if body.rollout is not None:  # in waves (services/rollouts.py); GET /rollouts shows it
            a, _ = rollouts.start_assignment(
                ctx,
                template,
                body.module_name,
                body.rollout.model_dump(),
                metadata=body.metadata,
                effective_priority_override=body.effective_priority,
            )
            return {"assignment": AssignmentOut.of(a)}
        a = templates.assign_module(
            ctx,
            template,
            body.module_name,
            metadata=body.metadata,
            effective_priority_override=body.effective_priority,
        )
        return {"assignment": AssignmentOut.of(a)}


@router.delete("/node_templates/{template}/assignments/{module_name}")
def unassign_module(
    template: str, module_name: str, state: State, actor: CurrentActor
) -> dict[str, dict[str, str]]:
    with state.unit(actor) as ctx:
        templates.unassign_module(ctx, template, module_name)
    return {"unassigned": {"template": template, "module_name": module_name}}


@router.patch("/node_module_assignments/{assignment_id}")
def update_assignment(
    assignment_id: str, body: AssignmentUpdate, state: State, actor: CurrentActor
) -> dict[str, AssignmentOut]:
    """Seed 003: ``PATCH /api/v1/system/node_module_assignments/<id>``."""
    with state.unit(actor) as ctx:
        if "effective_priority" in body.model_fields_set:
            a = templates.update_assignment(
                ctx,
                assignment_id,
                effective_priority_override=body.effective_priority,
                metadata=body.metadata,
            )
        else:
            a = templates.update_assignment(ctx, assignment_id, metadata=body.metadata)
        return {"assignment": AssignmentOut.of(a)}
