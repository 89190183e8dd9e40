"""Rollouts in waves: a version goes ``live`` for one wave of instances at a time.

Seed 003 promotes a version to ``live`` and every node takes it at its next
sync. With a rollout policy (issue 19 item 4) the promotion still happens —
one compare-and-set in the promotion service — but in the same transaction a
:class:`~powernode.platform.db.Rollout` row records, per instance, which wave
it belongs to; until its wave admits it, an instance is served the version
before (:func:`held_back`, which the desired-set computation excludes).

Policy (``policy`` in the API, all keys but ``waves`` optional)::

    {"waves": [{"percent": 10} | {"labels": {"rack": "a"}} | {"instances": [id, ...]}, ...],
     "pause_seconds": 0,        # between the end of a wave and the start of the next
     "soak_seconds": 0,         # heartbeats continuing this long after converging
     "deadline_seconds": 600,   # an admitted instance not succeeded by then has failed
     "max_converging": null,    # disruption budget K: at most K instances admitted at once
     "max_failed": 0}           # failure rule F: more than F failed in a wave halts it

Label and instance waves take their instances first (each instance is in one
wave: the first that selects it); percentage waves share what is left in
instance-id order, and their percentages must sum to 100. Instances that no
wave selects are served the previous version until the rollout completes.

Per instance the states are ``pending`` (served the previous version),
``admitted`` (served the new one), ``converged`` (reports the new digest
running, drift false), ``succeeded`` (still heartbeating ``soak_seconds``
after converging), ``failed`` (an attach/sync failure event after
admission, or the deadline passed; served the previous version again) and
``rolled_back`` (its wave halted). Progress is made by
:mod:`powernode.platform.services.rollout_tick` from the database alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from sqlalchemy import CursorResult, or_, select, update

from powernode.core.semver import Version
from powernode.platform.db import (
    FleetEvent,
    NodeInstance,
    NodeModule,
    NodeModuleAssignment,
    NodeModuleVersion,
    PromotionState,
    Rollout,
    RolloutState,
)
from powernode.platform.problems import ConflictError, NotFoundError
from powernode.platform.services import audit, promotion, templates
from powernode.platform.services.catalog import get_module, get_version
from powernode.platform.services.context import PROMOTE_LIVE, READ, WRITE, Ctx
from powernode.platform.services.rollout_policy import candidates, resolve_waves, validate_policy
from powernode.platform.services.templates import get_template

log = logging.getLogger(__name__)

R = RolloutState
SERVING: Final = frozenset({"admitted", "converged", "succeeded"})


class RolloutStateError(ConflictError):
    slug = "rollout-state"
    title = "Rollout is not in a state that allows this"


def previous_live(ctx: Ctx, version: NodeModuleVersion) -> NodeModuleVersion:
    """The highest live version of the module other than ``version``: what waiting nodes keep."""
    rows = ctx.session.scalars(
        select(NodeModuleVersion).where(
            NodeModuleVersion.module_id == version.module_id,
            NodeModuleVersion.promotion_state == PromotionState.LIVE.value,
            NodeModuleVersion.id != version.id,
        )
    ).all()
    if not rows:
        raise ConflictError(
            f"{version.module.name} has no live version yet, so nodes outside a wave would "
            "have nothing to run: promote its first version to live without a rollout",
            version_id=version.id,
        )
    return max(rows, key=lambda v: Version.parse(v.version_string))


def event(ctx: Ctx, kind: str, rollout: Rollout, severity: str = "info", **payload: object) -> None:
    ctx.session.add(
        FleetEvent(
            kind=kind,
            severity=severity,
            payload={"rollout_id": rollout.id, "version_id": rollout.version_id, **payload},
            occurred_at=ctx.now,
        )
    )


def start(
    ctx: Ctx,
    version_id: str,
    policy: Mapping[str, object],
    *,
    template_ref: str | None = None,
    note: str = "",
) -> Rollout:
    """Promote ``version_id`` to live under ``policy``; one transaction with the promotion."""
    ctx.actor.require(PROMOTE_LIVE, "starting a rollout")
    checked = validate_policy(policy)
    version = get_version(ctx, version_id)
    template_id = get_template(ctx, template_ref).id if template_ref else None
    previous = previous_live(ctx, version)
    waves = resolve_waves(checked, candidates(ctx, version.module_id, template_id))
    promotion.promote(ctx, version.id, PromotionState.LIVE.value, note=note)
    return _create(ctx, "version", version, previous, template_id, checked, waves, note)


def start_assignment(
    ctx: Ctx,
    template_ref: str,
    module_name: str,
    policy: Mapping[str, object],
    *,
    metadata: dict[str, object] | None = None,
    effective_priority_override: int | None = None,
) -> tuple[NodeModuleAssignment, Rollout]:
    """Assign a module to a template; its instances get it wave by wave."""
    ctx.actor.require(WRITE, "assigning a module in waves")
    checked = validate_policy(policy)
    template = get_template(ctx, template_ref)
    module = get_module(ctx, module_name)
    live = ctx.session.scalars(
        select(NodeModuleVersion).where(
            NodeModuleVersion.module_id == module.id,
            NodeModuleVersion.promotion_state == PromotionState.LIVE.value,
        )
    ).all()
    if not live:
        raise ConflictError(
            f"{module.name} has no live version: nothing to roll out", module=module.name
        )
    version = max(live, key=lambda v: Version.parse(v.version_string))
    waves = resolve_waves(checked, candidates(ctx, None, template.id))
    assignment = templates.assign_module(
        ctx,
        template.id,
        module.name,
        metadata=metadata,
        effective_priority_override=effective_priority_override,
    )
    rollout = _create(ctx, "assignment", version, None, template.id, checked, waves, "")
    return assignment, rollout


def _create(  # noqa: PLR0917
    ctx: Ctx,
    kind: str,
    version: NodeModuleVersion,
    previous: NodeModuleVersion | None,
    template_id: str | None,
    checked: dict[str, object],
    waves: list[list[str]],
    note: str,
) -> Rollout:
    nodes: dict[str, dict[str, object]] = {
        iid: {"wave": n, "state": "pending"} for n, ids in enumerate(waves) for iid in ids
    }
    rollout = Rollout(
        account=ctx.actor.account,
        module_id=version.module_id,
        version_id=version.id,
        previous_version_id=previous.id if previous else None,
        kind=kind,
        template_id=template_id,
        state=R.RUNNING.value,
        policy={**checked, "template_id": template_id},
        nodes=nodes,
        wave_count=len(waves),
        current_wave=0,
        generation=0,
        created_by=ctx.actor.name,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(rollout)
    ctx.session.flush()
    replacing = f"replacing {previous.version_string}" if previous else "newly assigned"
    summary = (
        f"{version.module.name} {version.version_string}: rollout in {len(waves)} wave(s) "
        f"({', '.join(str(len(w)) for w in waves)} instance(s)) {replacing}"
    )
    event(ctx, "rollout.started", rollout, rollout_kind=kind, waves=[len(w) for w in waves])
    audit.record(
        ctx,
        action="rollout.start",
        target_type="rollout",
        target_id=rollout.id,
        summary=summary,
        detail={"kind": kind, "policy": checked, "note": note},
    )
    return rollout


def get(ctx: Ctx, rollout_id: str) -> Rollout:
    ctx.actor.require(READ, "reading a rollout")
    r = ctx.session.get(Rollout, rollout_id)
    if r is None or r.account != ctx.actor.account:
        raise NotFoundError(f"rollout {rollout_id} not found", rollout_id=rollout_id)
    return r


def listing(ctx: Ctx, limit: int = 100) -> list[Rollout]:
    ctx.actor.require(READ, "listing rollouts")
    q = select(Rollout).where(Rollout.account == ctx.actor.account)
    return list(ctx.session.scalars(q.order_by(Rollout.created_at.desc(), Rollout.id).limit(limit)))


def held_back(ctx: Ctx, instance: NodeInstance) -> frozenset[str]:
    """Version ids this instance must not be served now (its wave has not admitted it).

    A version rollout counts while its version is live (a demotion or retirement
    ends it); an assignment rollout holds back every version of the module on
    its template's instances until it completes, and nothing once aborted (the
    abort removed the assignment). Only the newest rollout per version counts.
    """
    rows = ctx.session.execute(
        select(
            Rollout.version_id,
            Rollout.module_id,
            Rollout.kind,
            Rollout.template_id,
            Rollout.state,
            Rollout.nodes,
        )
        .join(NodeModuleVersion, NodeModuleVersion.id == Rollout.version_id)
        .where(
            Rollout.account == instance.node.account,
            Rollout.state != R.COMPLETED.value,
            or_(
                Rollout.kind == "assignment",
                NodeModuleVersion.promotion_state == PromotionState.LIVE.value,
            ),
        )
        .order_by(Rollout.created_at, Rollout.id)
    ).all()
    latest = {(row.kind, row.version_id, row.template_id): row for row in rows}
    out: set[str] = set()
    modules: set[str] = set()
    for row in latest.values():
        entry = row.nodes.get(instance.id)
        serving = entry is not None and entry.get("state") in SERVING
        if row.kind == "assignment":
            ours = row.template_id == instance.template_id and row.state != R.ABORTED.value
            if ours and not serving:
                modules.add(row.module_id)
        elif row.state == R.ABORTED.value or not serving:
            out.add(row.version_id)
    if modules:
        out.update(
            ctx.session.scalars(
                select(NodeModuleVersion.id).where(NodeModuleVersion.module_id.in_(modules))
            )
        )
    return frozenset(out)


def cas(ctx: Ctx, rollout: Rollout, **values: object) -> bool:
    """Write ``values`` if nobody advanced the rollout since it was read; True if written."""
    result = ctx.session.execute(
        update(Rollout)
        .where(Rollout.id == rollout.id, Rollout.generation == rollout.generation)
        .values(generation=rollout.generation + 1, updated_at=ctx.now, **values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        return False
    ctx.session.expire(rollout)
    return True


def _act(
    ctx: Ctx, rollout_id: str, verb: str, allowed: frozenset[str], to: RolloutState, **extra: object
) -> Rollout:
    ctx.actor.require(PROMOTE_LIVE if verb != "pause" else WRITE, f"{verb} a rollout")
    r = get(ctx, rollout_id)
    if r.state not in allowed:
        raise RolloutStateError(
            f"cannot {verb} rollout {r.id}: it is {r.state}; {verb} applies to a "
            f"{' or '.join(sorted(allowed))} rollout",
            rollout_id=r.id,
            state=r.state,
        )
    before = r.state
    if not cas(ctx, r, state=to.value, **extra):
        raise RolloutStateError(
            f"rollout {rollout_id} changed while you asked; reload it and decide again",
            rollout_id=rollout_id,
        )
    event(ctx, f"rollout.{to.value}", r, by=ctx.actor.name)
    audit.record(
        ctx,
        action=f"rollout.{verb}",
        target_type="rollout",
        target_id=r.id,
        summary=f"rollout {r.id}: {before} -> {to.value}",
        detail={"from": before},
    )
    return r


def pause(ctx: Ctx, rollout_id: str) -> Rollout:
    """Stop admitting instances; those admitted keep the new version."""
    return _act(ctx, rollout_id, "pause", frozenset({R.RUNNING.value}), R.PAUSED)


def resume(ctx: Ctx, rollout_id: str) -> Rollout:
    return _act(ctx, rollout_id, "resume", frozenset({R.PAUSED.value}), R.RUNNING)


def abort(ctx: Ctx, rollout_id: str) -> Rollout:
    """Every instance back to the previous version: the new one is demoted live -> blessed.

    An assignment rollout's abort removes the assignment instead."""
    active = frozenset({R.RUNNING.value, R.PAUSED.value, R.HALTED.value})
    r = _act(ctx, rollout_id, "abort", active, R.ABORTED, reason="aborted by " + ctx.actor.name)
    if r.kind == "assignment":
        module = ctx.session.get(NodeModule, r.module_id)
        if r.template_id is not None and module is not None:
            templates.unassign_module(ctx, r.template_id, module.name)
        return r
    version = ctx.session.get(NodeModuleVersion, r.version_id)
    if version is not None and version.promotion_state == PromotionState.LIVE.value:
        promotion.promote(
            ctx, version.id, PromotionState.BLESSED.value, note=f"rollout {r.id} aborted"
        )
    return r
