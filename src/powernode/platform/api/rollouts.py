"""Rollouts in waves: ``/node_module_versions/{id}/rollouts`` and ``/rollouts/{id}/…``."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas import In, RolloutPolicy, Text
from powernode.platform.db import Rollout
from powernode.platform.services import rollouts

router = APIRouter(tags=["rollouts"])


class RolloutRequest(In):
    policy: RolloutPolicy = Field(description="waves, pause/soak/deadline seconds, budgets")
    template: str | None = Field(default=None, description="only this template's instances")
    note: str = Text


class WaveOut(BaseModel):
    wave: int
    instances: dict[str, str]  # instance id -> state
    counts: dict[str, int]


class RolloutOut(BaseModel):
    id: str
    module_id: str
    version_id: str
    previous_version_id: str | None = Field(description="null for an assignment rollout")
    kind: str = Field(description="version (promotion to live) or assignment")
    template_id: str | None = Field(description="set when the rollout covers one template")
    state: str
    current_wave: int = Field(description="1-based; wave_count + 1 once every wave is done")
    wave_count: int
    next_wave_at: datetime | None
    reason: str
    policy: dict[str, Any]  # Any: the validated policy as stored (see RolloutRequest)
    waves: list[WaveOut]
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: Rollout) -> RolloutOut:
        waves = []
        for n in range(r.wave_count):
            members = {iid: str(e["state"]) for iid, e in sorted(r.nodes.items()) if e["wave"] == n}
            waves.append(
                WaveOut(wave=n + 1, instances=members, counts=dict(Counter(members.values())))
            )
        return cls(
            id=r.id,
            module_id=r.module_id,
            version_id=r.version_id,
            previous_version_id=r.previous_version_id,
            kind=r.kind,
            template_id=r.template_id,
            state=r.state,
            current_wave=r.current_wave + 1,
            wave_count=r.wave_count,
            next_wave_at=r.next_wave_at,
            reason=r.reason,
            policy=r.policy,
            waves=waves,
            created_by=r.created_by,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


@router.post("/node_module_versions/{version_id}/rollouts", status_code=status.HTTP_201_CREATED)
def start(
    version_id: str, body: RolloutRequest, state: State, actor: CurrentActor
) -> dict[str, RolloutOut]:
    """Promote the version to live in waves (the promotion and the rollout are one transaction)."""
    with state.unit(actor) as ctx:
        r = rollouts.start(
            ctx, version_id, body.policy.model_dump(), template_ref=body.template, note=body.note
        )
        return {"rollout": RolloutOut.of(r)}


@router.get("/rollouts")
def listing(state: State, actor: Reader) -> dict[str, list[RolloutOut]]:
    with state.unit(actor) as ctx:
        return {"rollouts": [RolloutOut.of(r) for r in rollouts.listing(ctx)]}


@router.get("/rollouts/{rollout_id}")
def get(rollout_id: str, state: State, actor: Reader) -> dict[str, RolloutOut]:
    with state.unit(actor) as ctx:
        return {"rollout": RolloutOut.of(rollouts.get(ctx, rollout_id))}


@router.post("/rollouts/{rollout_id}/pause")
def pause(rollout_id: str, state: State, actor: CurrentActor) -> dict[str, RolloutOut]:
    """Admit no more instances (409 unless running)."""
    with state.unit(actor) as ctx:
        return {"rollout": RolloutOut.of(rollouts.pause(ctx, rollout_id))}


@router.post("/rollouts/{rollout_id}/resume")
def resume(rollout_id: str, state: State, actor: CurrentActor) -> dict[str, RolloutOut]:
    with state.unit(actor) as ctx:
        return {"rollout": RolloutOut.of(rollouts.resume(ctx, rollout_id))}


@router.post("/rollouts/{rollout_id}/abort")
def abort(rollout_id: str, state: State, actor: CurrentActor) -> dict[str, RolloutOut]:
    """Every instance back to the previous version; the new version is demoted to blessed."""
    with state.unit(actor) as ctx:
        return {"rollout": RolloutOut.of(rollouts.abort(ctx, rollout_id))}
