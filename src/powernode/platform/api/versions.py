"""Module versions and their promotion: ``/node_module_versions/{id}/…``."""

from __future__ import annotations

from fastapi import APIRouter, status

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas import (
    ApprovalOut,
    DemoteRequest,
    NoteRequest,
    PromoteRequest,
    VersionOut,
)
from powernode.platform.db import PromotionState
from powernode.platform.problems import ConflictError
from powernode.platform.services import catalog, promotion, rollouts

router = APIRouter(tags=["versions"])


@router.get("/node_module_versions/{version_id}")
def get_version(version_id: str, state: State, actor: Reader) -> dict[str, VersionOut]:
    with state.unit(actor) as ctx:
        return {"version": VersionOut.of(catalog.get_version(ctx, version_id))}


@router.post("/node_module_versions/{version_id}/promote")
def promote(
    version_id: str, body: PromoteRequest, state: State, actor: CurrentActor
) -> dict[str, VersionOut]:
    """Move to ``to`` if the transition table allows it (``live`` may need an approval).

    With ``rollout`` (to ``live`` only) the version goes live in waves: see
    ``POST /node_module_versions/{id}/rollouts``, which this then is.
    """
    with state.unit(actor) as ctx:
        if body.rollout is not None:
            if body.to is not PromotionState.LIVE:
                raise ConflictError(
                    f"a rollout applies to a promotion to live, not to {body.to.value}",
                    requested_state=body.to.value,
                )
            r = rollouts.start(
                ctx,
                version_id,
                body.rollout.model_dump(),
                template_ref=body.rollout_template,
                note=body.note,
            )
            return {"version": VersionOut.of(catalog.get_version(ctx, r.version_id))}
        v = promotion.promote(ctx, version_id, body.to.value, note=body.note)
        return {"version": VersionOut.of(v)}


@router.post("/node_module_versions/{version_id}/demote")
def demote(
    version_id: str, body: DemoteRequest, state: State, actor: CurrentActor
) -> dict[str, VersionOut]:
    """One step back (live→blessed→staging→built), or to ``to`` when given."""
    with state.unit(actor) as ctx:
        target = body.to
        if target is None:
            current = PromotionState(catalog.get_version(ctx, version_id).promotion_state)
            target = promotion.previous_state(current)
        v = promotion.promote(ctx, version_id, target.value, note=body.note)
        return {"version": VersionOut.of(v)}


@router.post("/node_module_versions/{version_id}/retire")
def retire(
    version_id: str, body: NoteRequest, state: State, actor: CurrentActor
) -> dict[str, VersionOut]:
    with state.unit(actor) as ctx:
        v = promotion.promote(ctx, version_id, PromotionState.RETIRED.value, note=body.note)
        return {"version": VersionOut.of(v)}


@router.post("/node_module_versions/{version_id}/approvals", status_code=status.HTTP_201_CREATED)
def approve(
    version_id: str, body: NoteRequest, state: State, actor: CurrentActor
) -> dict[str, ApprovalOut]:
    """Approve the version going live (needed when the module has require_approval)."""
    with state.unit(actor) as ctx:
        return {"approval": ApprovalOut.of(promotion.approve(ctx, version_id, note=body.note))}
