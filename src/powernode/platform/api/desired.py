"""Composition preview and drift: ``/node_templates/{t}/composition``, ``…/drift``,
``/node_instances/{id}/drift`` (read scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from powernode.platform.api.deps import Reader, State
from powernode.platform.api.schemas.desired import (
    DesiredModuleOut,
    DriftOut,
    TemplateCompositionOut,
    TemplateDriftOut,
    TemplateRef,
)
from powernode.platform.db import PromotionState
from powernode.platform.services import drift
from powernode.platform.services.desired import desired_set, parse_states

router = APIRouter(tags=["composition"])

States = Annotated[
    list[PromotionState] | None,
    Query(
        max_length=5,
        description="promotion states the resolver may choose from (repeat; default "
        "blessed and live for a template; for an instance, what its node is served: "
        "live, or staging, blessed and live on a test node)",
    ),
]


@router.get("/node_templates/{template}/composition")
def template_composition(
    template: str, state: State, actor: Reader, allowed_states: States = None
) -> TemplateCompositionOut:
    """The template's assignments resolved (dependencies included) and composed."""
    states = parse_states(allowed_states)
    with state.unit(actor) as ctx:
        return TemplateCompositionOut.of(desired_set(ctx, template, states))


@router.get("/node_templates/{template}/drift")
def template_drift(
    template: str, state: State, actor: Reader, allowed_states: States = None
) -> TemplateDriftOut:
    """A drift report for every instance of the template that is not terminated."""
    states = parse_states(allowed_states)
    with state.unit(actor) as ctx:
        desired, reports = drift.template_drift(ctx, template, states)
        out = [DriftOut.of(r) for r in reports]
        return TemplateDriftOut(
            drift=any(r.drift for r in out),
            template=TemplateRef(id=desired.template_id, name=desired.template_name),
            allowed_states=sorted(desired.allowed_states),
            desired=[DesiredModuleOut.of(m) for m in desired.modules],
            instances=out,
        )


@router.get("/node_instances/{instance_id}/drift")
def instance_drift(
    instance_id: str, state: State, actor: Reader, allowed_states: States = None
) -> DriftOut:
    """Seed 004 ``system_drift_report({instance_id})`` → ``{drift: false, …}``.

    Without ``allowed_states``: against what the instance's node is served
    (``live``; ``staging``, ``blessed`` and ``live`` on a test node).
    """
    states = parse_states(allowed_states) if allowed_states else None
    with state.unit(actor) as ctx:
        _desired, report = drift.instance_drift(ctx, instance_id, states)
        return DriftOut.of(report)
