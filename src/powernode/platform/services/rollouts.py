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

from sqlalchemy import CursorResult, select, update

from powernode.core.semver import Version
from powernode.platform.db import (
    FleetEvent,
    InstanceStatus,
    Node,
    NodeInstance,
    NodeModuleAssignment,
    NodeModuleVersion,
    PromotionState,
    Rollout,
    RolloutState,
)
from powernode.platform.problems import ConflictError, InvalidInputError, NotFoundError
from powernode.platform.services import audit, promotion
from powernode.platform.services.catalog import get_version
from powernode.platform.services.context import PROMOTE_LIVE, READ, WRITE, Ctx
from powernode.platform.services.templates import get_template

log = logging.getLogger(__name__)

R = RolloutState
SERVING: Final = frozenset({"admitted", "converged", "succeeded"})
ENDED: Final = frozenset({InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value})
POLICY_KEYS: Final = frozenset(
    {"waves", "pause_seconds", "soak_seconds", "deadline_seconds", "max_converging", "max_failed"}
)
MAX_WAVES = 100


class RolloutStateError(ConflictError):
    slug = "rollout-state"
    title = "Rollout is not in a state that allows this"


def _int(policy: Mapping[str, object], key: str, default: int | None, low: int) -> int | None:
    value = policy.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidInputError(
            f"policy.{key} must be an integer >= {low}, got {value!r}", field=f"policy.{key}"
        )
    return value


def validate_policy(policy: Mapping[str, object]) -> dict[str, object]:
    """The policy with defaults filled in, or InvalidInputError saying what is wrong."""
    unknown = sorted(set(policy) - POLICY_KEYS)
    if unknown:
        raise InvalidInputError(
            f"policy has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(POLICY_KEYS))}",
            field="policy",
        )
    waves = policy.get("waves")
    if not isinstance(waves, list) or not waves or len(waves) > MAX_WAVES:
        raise InvalidInputError(
            f"policy.waves must be a list of 1 to {MAX_WAVES} waves", field="policy.waves"
        )
    percents = 0
    seen_percent = False
    for i, wave in enumerate(waves, 1):
        where = f"policy.waves[{i}]"
        if not isinstance(wave, dict) or len(wave) != 1:
            raise InvalidInputError(
                f"{where} must be one of {{percent: N}}, {{labels: {{k: v}}}}, "
                "{instances: [ids]}",
                field=where,
            )
        ((kind, value),) = wave.items()
        if kind == "percent":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 100:
                raise InvalidInputError(
                    f"{where}.percent must be 1..100, got {value!r}", field=where
                )
            percents += value
            seen_percent = True
        elif kind == "labels":
            if not isinstance(value, dict) or not value:
                raise InvalidInputError(f"{where}.labels must be a non-empty mapping", field=where)
        elif kind == "instances":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(x, str) for x in value)
            ):
                raise InvalidInputError(
                    f"{where}.instances must be a non-empty list of instance ids (empty wave)",
                    field=where,
                )
        else:
            raise InvalidInputError(
                f"{where}: unknown selector {kind!r}; use percent, labels or instances", field=where
            )
    if seen_percent and percents != 100:
        raise InvalidInputError(
            f"policy.waves percentages sum to {percents}, not 100", field="policy.waves"
        )
    return {
        "waves": waves,
        "pause_seconds": _int(policy, "pause_seconds", 0, 0),
        "soak_seconds": _int(policy, "soak_seconds", 0, 0),
        "deadline_seconds": _int(policy, "deadline_seconds", 600, 1),
        "max_converging": _int(policy, "max_converging", None, 1),
        "max_failed": _int(policy, "max_failed", 0, 0),
    }


def _candidates(ctx: Ctx, module_id: str, template_id: str | None) -> list[NodeInstance]:
    """Live instances whose template has the module assigned (optionally one template)."""
    q = (
        select(NodeInstance)
        .join(NodeInstance.node)
        .join(NodeModuleAssignment, NodeModuleAssignment.template_id == NodeInstance.template_id)
        .where(
            Node.account == ctx.actor.account,
            NodeModuleAssignment.module_id == module_id,
            NodeInstance.status.not_in(ENDED),
        )
        .order_by(NodeInstance.id)
    )
    if template_id is not None:
        q = q.where(NodeInstance.template_id == template_id)
    return list(ctx.session.scalars(q).unique())


def resolve_waves(policy: Mapping[str, object], instances: list[NodeInstance]) -> list[list[str]]:
    """Each wave's instance ids; InvalidInputError for a wave that selects nothing."""
    waves = policy["waves"]
    assert isinstance(waves, list)
    known = {i.id: i for i in instances}
    taken: set[str] = set()
    out: list[list[str]] = [[] for _ in waves]
    for n, wave in enumerate(waves):
        if "instances" in wave:
            for iid in wave["instances"]:
                if iid not in known:
                    raise InvalidInputError(
                        f"policy.waves[{n + 1}]: instance {iid} does not run a template "
                        "with this module assigned",
                        field=f"policy.waves[{n + 1}]",
                    )
                if iid not in taken:
                    out[n].append(iid)
                    taken.add(iid)
        elif "labels" in wave:
            want = wave["labels"]
            for i in instances:
                meta = i.node.node_metadata or {}
                if i.id not in taken and all(meta.get(k) == v for k, v in want.items()):
                    out[n].append(i.id)
                    taken.add(i.id)
    rest = [i.id for i in instances if i.id not in taken]
    cumulative, start = 0, 0
    for n, wave in enumerate(waves):
        if "percent" in wave:
            cumulative += wave["percent"]
            end = round(len(rest) * cumulative / 100)
            out[n] = rest[start:end]
            start = end
    for n, ids in enumerate(out):
        if not ids:
            raise InvalidInputError(
                f"policy.waves[{n + 1}] selects no instance (empty wave); "
                f"{len(instances)} instance(s) run this module's templates",
                field=f"policy.waves[{n + 1}]",
            )
    return out


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
    waves = resolve_waves(checked, _candidates(ctx, version.module_id, template_id))
    promotion.promote(ctx, version.id, PromotionState.LIVE.value, note=note)
    nodes: dict[str, dict[str, object]] = {
        iid: {"wave": n, "state": "pending"} for n, ids in enumerate(waves) for iid in ids
    }
    rollout = Rollout(
        account=ctx.actor.account,
        module_id=version.module_id,
        version_id=version.id,
        previous_version_id=previous.id,
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
    summary = (
        f"{version.module.name} {version.version_string}: rollout in {len(waves)} wave(s) "
        f"({', '.join(str(len(w)) for w in waves)} instance(s)) replacing {previous.version_string}"
    )
    event(ctx, "rollout.started", rollout, waves=[len(w) for w in waves])
    audit.record(
        ctx,
        action="rollout.start",
        target_type="rollout",
        target_id=rollout.id,
        summary=summary,
        detail={"policy": checked, "note": note},
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
    """Version ids this instance must not be served now (its wave has not admitted it)."""
    rows = ctx.session.execute(
        select(Rollout.version_id, Rollout.state, Rollout.nodes, Rollout.created_at)
        .join(NodeModuleVersion, NodeModuleVersion.id == Rollout.version_id)
        .where(
            Rollout.account == instance.node.account,
            Rollout.state != R.COMPLETED.value,
            NodeModuleVersion.promotion_state == PromotionState.LIVE.value,
        )
        .order_by(Rollout.created_at)
    ).all()
    latest = {version_id: (state, nodes) for version_id, state, nodes, _ in rows}
    out = set()
    for version_id, (state, nodes) in latest.items():
        entry = nodes.get(instance.id)
        if state == R.ABORTED.value or entry is None or entry.get("state") not in SERVING:
            out.add(version_id)
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
    """Every instance back to the previous version: the new one is demoted live -> blessed."""
    active = frozenset({R.RUNNING.value, R.PAUSED.value, R.HALTED.value})
    r = _act(ctx, rollout_id, "abort", active, R.ABORTED, reason="aborted by " + ctx.actor.name)
    version = ctx.session.get(NodeModuleVersion, r.version_id)
    if version is not None and version.promotion_state == PromotionState.LIVE.value:
        promotion.promote(
            ctx, version.id, PromotionState.BLESSED.value, note=f"rollout {r.id} aborted"
        )
    return r
