"""Rollout progress, evaluated from the database alone (issue 19 item 4).

:func:`tick` reads every running rollout and, for its current wave:

1. marks admitted instances ``failed`` on an attach/sync failure event since
   their admission, or when ``deadline_seconds`` passed without success;
2. marks them ``converged`` when their last heartbeat reports the new digest
   running and their drift (against what *they* are served) is false — at the
   time of that heartbeat — and ``succeeded`` once a heartbeat arrives
   ``soak_seconds`` after that;
3. halts the rollout when more than ``max_failed`` instances of the wave
   failed: the wave's instances are ``rolled_back`` (served the previous
   version again), later waves stay ``pending``;
4. admits pending instances while fewer than ``max_converging`` are in flight;
5. when every instance of the wave succeeded or failed, moves to the next wave
   (after ``pause_seconds``), or completes.

The new document is written by a compare-and-set on ``generation``
(services/rollouts.cas): of two processes ticking at once, one writes and the
other's update matches no row and is dropped, events and all. Nothing is
kept in memory between ticks, so a restart of every process resumes exactly.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select

from powernode.platform.db import (
    FleetEvent,
    NodeInstance,
    NodeModule,
    NodeModuleVersion,
    Rollout,
    RolloutState,
)
from powernode.platform.services import audit
from powernode.platform.services.context import READ, Actor, Ctx
from powernode.platform.services.desired import desired_for, node_states
from powernode.platform.services.drift import compare
from powernode.platform.services.rollouts import cas, event, held_back

log = logging.getLogger(__name__)

# What a node reports when a version it was admitted to does not work there; an init
# action that fails after the union changed (agent/initactions.py) counts too.
FAILURE_KINDS: Final = frozenset(
    {
        "module.attach_failed",
        "module.sync_failed",
        "module.refused",
        "module.restore_failed",
        "module.init_failed",
    }
)
IN_FLIGHT: Final = frozenset({"admitted", "converged"})
DONE: Final = frozenset({"succeeded", "failed"})


def _at(value: object) -> datetime:
    assert isinstance(value, str)
    return datetime.fromisoformat(value)


def _num(policy: dict[str, object], key: str, default: int) -> int:
    value = policy.get(key)
    return value if isinstance(value, int) else default


def _converged(ctx: Ctx, instance: NodeInstance, module: str, digest: str | None) -> bool:
    """The instance runs what it is served (drift false), the rollout's module included,
    at ``digest`` (a version rollout) or at whatever version it is served (assignment)."""
    desired = desired_for(
        ctx,
        instance.node.template,
        node_states(instance.node.node_metadata),
        held_back(ctx, instance),
    )
    wanted = {m.name: (m.composefs_digest, m.version_string) for m in desired.modules}
    running = {str(k): str(v) for k, v in (instance.running_module_digests or {}).items()}
    if module not in wanted or (digest is not None and running.get(module) != digest):
        return False
    return all(m.status == "ok" for m in compare(wanted, running))


def tick(ctx: Ctx) -> int:
    """Advance every running rollout one step; how many were changed."""
    ids = ctx.session.scalars(
        select(Rollout.id).where(Rollout.state == RolloutState.RUNNING.value).order_by(Rollout.id)
    ).all()
    return sum(1 for rid in ids if advance(ctx, rid))


def advance(ctx: Ctx, rollout_id: str) -> bool:
    r = ctx.session.get(Rollout, rollout_id, populate_existing=True)
    if r is None or r.state != RolloutState.RUNNING.value:
        return False
    scoped = Ctx(
        ctx.session, Actor("platform:rollouts", None, frozenset({READ}), r.account), ctx.now
    )
    return _advance(scoped, ctx, r)


def _advance(scoped: Ctx, ctx: Ctx, r: Rollout) -> bool:
    policy = r.policy
    nodes = copy.deepcopy(r.nodes)
    wave = r.current_wave
    if wave >= r.wave_count:
        return _finish(ctx, r, nodes)
    if r.next_wave_at is not None and ctx.now < r.next_wave_at:
        return False  # the pause between waves
    version = ctx.session.get(NodeModuleVersion, r.version_id)
    module = ctx.session.get(NodeModule, r.module_id)
    assert version is not None and module is not None
    members = sorted(iid for iid, n in nodes.items() if n["wave"] == wave)
    instances = {
        i.id: i
        for i in ctx.session.scalars(select(NodeInstance).where(NodeInstance.id.in_(members)))
    }
    flying = [iid for iid in members if nodes[iid]["state"] in IN_FLIGHT]
    failed_at: dict[str, datetime] = {}
    if flying:
        for iid, at in ctx.session.execute(
            select(FleetEvent.instance_id, FleetEvent.occurred_at).where(
                FleetEvent.instance_id.in_(flying), FleetEvent.kind.in_(FAILURE_KINDS)
            )
        ):
            if iid is not None and at >= _at(nodes[iid]["admitted_at"]):
                failed_at[iid] = at
    soak = timedelta(seconds=_num(policy, "soak_seconds", 0))
    deadline = timedelta(seconds=_num(policy, "deadline_seconds", 600))
    for iid in flying:
        n = nodes[iid]
        inst = instances.get(iid)
        if iid in failed_at:
            n.update(state="failed", why="attach failure reported")
            continue
        if inst is None:
            n.update(state="failed", why="instance deleted")
            continue
        beat = inst.last_heartbeat_at
        admitted = _at(n["admitted_at"])
        if n["state"] == "admitted" and beat is not None and beat >= admitted:
            digest = version.composefs_digest if r.kind == "version" else None
            if _converged(scoped, inst, module.name, digest):
                n.update(state="converged", converged_at=beat.isoformat())
        if n["state"] == "converged" and beat is not None and beat - _at(n["converged_at"]) >= soak:
            n["state"] = "succeeded"
        elif ctx.now - admitted > deadline:
            n.update(state="failed", why=f"not succeeded within {deadline.total_seconds():.0f} s")
    failed = [iid for iid in members if nodes[iid]["state"] == "failed"]
    limit = _num(policy, "max_failed", 0)
    if len(failed) > limit:
        for iid in members:
            if nodes[iid]["state"] != "failed":
                nodes[iid]["state"] = "rolled_back"
        reason = f"wave {wave + 1}: {len(failed)} instance(s) failed (more than {limit})"
        if not cas(ctx, r, nodes=nodes, state=RolloutState.HALTED.value, reason=reason):
            return False
        event(ctx, "rollout.halted", r, "error", wave=wave + 1, failed=failed, reason=reason)
        audit.record(
            ctx,
            action="rollout.halt",
            target_type="rollout",
            target_id=r.id,
            summary=f"rollout {r.id} halted and rolled back: {reason}",
            detail={"failed": failed, "wave": wave + 1},
        )
        return True
    budget = policy.get("max_converging")
    in_flight = sum(1 for iid in members if nodes[iid]["state"] in IN_FLIGHT)
    admitted_now = []
    for iid in members:
        if nodes[iid]["state"] != "pending":
            continue
        if isinstance(budget, int) and in_flight >= budget:
            break
        nodes[iid].update(state="admitted", admitted_at=ctx.now.isoformat())
        admitted_now.append(iid)
        in_flight += 1
    values: dict[str, object] = {"nodes": nodes}
    done = all(nodes[iid]["state"] in DONE for iid in members)
    if done:
        values["current_wave"] = wave + 1
        pause = _num(policy, "pause_seconds", 0)
        values["next_wave_at"] = ctx.now + timedelta(seconds=pause) if pause else None
    if nodes == r.nodes and not done:
        return False
    if not cas(ctx, r, **values):
        return False
    if admitted_now:
        event(ctx, "rollout.admitted", r, wave=wave + 1, instances=admitted_now)
    if done:
        event(ctx, "rollout.wave_completed", r, wave=wave + 1, failed=failed)
        if wave + 1 >= r.wave_count:
            return _finish(ctx, r, nodes) or True
    return True


def _finish(ctx: Ctx, r: Rollout, nodes: dict[str, dict[str, object]]) -> bool:
    ctx.session.refresh(r)
    if not cas(ctx, r, state=RolloutState.COMPLETED.value):
        return False
    event(ctx, "rollout.completed", r)
    audit.record(
        ctx,
        action="rollout.complete",
        target_type="rollout",
        target_id=r.id,
        summary=f"rollout {r.id} completed",
        detail={"waves": r.wave_count},
    )
    return True
