"""Promotion of module versions: built → staging → blessed → live → retired.

The state machine is :func:`check_transition`, a pure function over the
table below; :func:`promote` applies it to a row. Seed 003: "promote
through staging → blessed → live, demote/rollback to retired"; seed 004:
"promotion to live is often require_approval".

Legal moves (anything else is a 409 that changes nothing):

- forward one step: built→staging, staging→blessed, blessed→live;
- back one step (demote / rollback): live→blessed, blessed→staging,
  staging→built;
- retire from any state but retired; retired is final (publish a new version
  instead, so what ran once can always be told apart from what runs now).

Going ``live`` needs the ``promote-live`` scope, and when the module's policy
says ``require_approval``, an unused approval of that version recorded by a
*different* token (four eyes) with :func:`approve`.

Concurrency (issue 13 item 3): every transition is one compare-and-set
``UPDATE … SET promotion_state = :to WHERE id = :id AND promotion_state =
:from``, and an approval is consumed by ``UPDATE … SET used_at = :now WHERE
id = :id AND used_at IS NULL``. The database evaluates each ``WHERE`` under
the row's write lock (PostgreSQL re-checks it on the committed row after
waiting; SQLite runs it under its single writer lock), so of two requests
that read the same state only one changes it; the other matches no row and
answers 409 with what the state is now. No lock is taken on the earlier
read, so this needs neither ``SELECT … FOR UPDATE`` (which SQLite ignores)
nor ``BEGIN IMMEDIATE``. The audit row is written after the compare-and-set
succeeded, in the same transaction: one transition, one audit row.

Forward moves are also gated by the promotion policy over the version's
supply-chain evidence (services/evidence.py, issue 18), evaluated in the
same transaction just before the compare-and-set.
"""

from __future__ import annotations

import logging
from typing import Final

from sqlalchemy import CursorResult, select, update

from powernode.platform.db import NodeModuleVersion, PromotionApproval, PromotionState
from powernode.platform.problems import (
    ApprovalRequiredError,
    InvalidInputError,
    TransitionError,
)
from powernode.platform.services import audit, evidence
from powernode.platform.services.catalog import get_version
from powernode.platform.services.context import PROMOTE_LIVE, WRITE, Ctx

log = logging.getLogger(__name__)

S = PromotionState
ORDER: Final = (S.BUILT, S.STAGING, S.BLESSED, S.LIVE)
LEGAL: Final[dict[PromotionState, frozenset[PromotionState]]] = {
    S.BUILT: frozenset({S.STAGING, S.RETIRED}),
    S.STAGING: frozenset({S.BLESSED, S.BUILT, S.RETIRED}),
    S.BLESSED: frozenset({S.LIVE, S.STAGING, S.RETIRED}),
    S.LIVE: frozenset({S.BLESSED, S.RETIRED}),
    S.RETIRED: frozenset(),
}


def parse_state(value: str, field: str = "to") -> PromotionState:
    try:
        return PromotionState(value)
    except ValueError:
        raise InvalidInputError(
            f"{field} {value!r} is not a promotion_state; choose one of "
            + ", ".join(s.value for s in PromotionState),
            field=field,
        ) from None


def check_transition(current: PromotionState, target: PromotionState) -> PromotionState:
    """``target`` when moving there from ``current`` is legal, else TransitionError."""
    if target in LEGAL[current]:
        return target
    legal = ", ".join(s.value for s in (*ORDER, S.RETIRED) if s in LEGAL[current])
    if current is target:
        why = f"the version is already {current.value}"
    elif current is S.RETIRED:
        why = "retired is final; publish a new version instead"
    else:
        why = "promotion moves one step at a time"
    raise TransitionError(
        f"cannot move from {current.value} to {target.value}: {why}. "
        f"From {current.value} the legal targets are: {legal or 'none'}",
        current_state=current.value,
        requested_state=target.value,
        legal_targets=sorted(s.value for s in LEGAL[current]),
    )


def previous_state(current: PromotionState) -> PromotionState:
    """The demotion target: one step back along built → staging → blessed → live."""
    if current not in ORDER or current is S.BUILT:
        raise TransitionError(
            f"cannot demote a {current.value} version: nothing comes before it",
            current_state=current.value,
        )
    return ORDER[ORDER.index(current) - 1]


def promote(ctx: Ctx, version_id: str, to: str, *, note: str = "") -> NodeModuleVersion:
    """Move a version to ``to`` (forward, back or retired) if the table and policy allow."""
    target = parse_state(to)
    action = f"moving a version to {target.value}"
    ctx.actor.require(PROMOTE_LIVE if target is S.LIVE else WRITE, action)
    version = get_version(ctx, version_id)
    current = PromotionState(version.promotion_state)
    check_transition(current, target)
    module = version.module
    approval: PromotionApproval | None = None
    if target is S.LIVE and module.require_approval:
        approval = _usable_approval(ctx, version)
    if _forward(current, target):
        # Issue 18: the module's (or category's) policy over the version's evidence, read
        # in this transaction; a refusal raises before the compare-and-set, changing nothing.
        evidence.check_promotion(ctx, version, target.value)
    moved = ctx.session.execute(
        update(NodeModuleVersion)
        .where(
            NodeModuleVersion.id == version.id,
            NodeModuleVersion.promotion_state == current.value,
        )
        .values(promotion_state=target.value, promoted_at=ctx.now)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(moved) != 1:
        _lost_race(ctx, version, current, target)
    ctx.session.refresh(version, ["promotion_state", "promoted_at"])
    if approval is not None:
        _consume(ctx, approval, version)
    audit.record(
        ctx,
        action="module_version.promote",
        target_type="node_module_version",
        target_id=version.id,
        summary=f"{module.name} {version.version_string}: {current.value} -> {target.value}",
        detail={
            "module": module.name,
            "version_string": version.version_string,
            "from": current.value,
            "to": target.value,
            "approval_id": approval.id if approval else None,
            "note": note,
        },
    )
    return version


def _forward(current: PromotionState, target: PromotionState) -> bool:
    """Promotion, not a demotion or retirement (those are never held back by evidence)."""
    return current in ORDER and target in ORDER and ORDER.index(target) > ORDER.index(current)


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def _consume(ctx: Ctx, approval: PromotionApproval, version: NodeModuleVersion) -> None:
    """Mark ``approval`` used, unless another promotion did so first (then 403)."""
    used = ctx.session.execute(
        update(PromotionApproval)
        .where(PromotionApproval.id == approval.id, PromotionApproval.used_at.is_(None))
        .values(used_at=ctx.now)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(used) != 1:
        raise ApprovalRequiredError(
            f"the approval {approval.id} of {version.module.name} {version.version_string} "
            "was used by another promotion at the same time; each approval serves one "
            f"go-live (powernode system approve-module-version {version.id}), then promote again",
            version_id=version.id,
        )
    ctx.session.expire(approval, ["used_at"])


def _lost_race(
    ctx: Ctx, version: NodeModuleVersion, current: PromotionState, target: PromotionState
) -> None:
    """The compare-and-set matched no row: someone moved the version first. Always raises."""
    now_state = ctx.session.scalar(
        select(NodeModuleVersion.promotion_state)
        .where(NodeModuleVersion.id == version.id)
        .execution_options(populate_existing=True)
    )
    raise TransitionError(
        f"cannot move {version.module.name} {version.version_string} from {current.value} to "
        f"{target.value}: another request moved it to {now_state} at the same time. "
        "Reload it and decide again",
        current_state=now_state,
        requested_state=target.value,
        legal_targets=sorted(s.value for s in LEGAL[PromotionState(now_state)])
        if now_state in {s.value for s in PromotionState}
        else [],
    )


def _usable_approval(ctx: Ctx, version: NodeModuleVersion) -> PromotionApproval:
    q = select(PromotionApproval).where(
        PromotionApproval.version_id == version.id,
        PromotionApproval.to_state == S.LIVE.value,
        PromotionApproval.used_at.is_(None),
    )
    for approval in ctx.session.scalars(q.order_by(PromotionApproval.approved_at)):
        if approval.approved_by_token_id != ctx.actor.token_id or ctx.actor.token_id is None:
            return approval
    raise ApprovalRequiredError(
        f"module {version.module.name!r} requires approval to go live: an operator with "
        "another promote-live token approves first "
        f"(powernode system approve-module-version {version.id}), then promote again",
        version_id=version.id,
    )


def approve(ctx: Ctx, version_id: str, *, note: str = "") -> PromotionApproval:
    """Record an approval for the version to go live (used by the next promotion)."""
    ctx.actor.require(PROMOTE_LIVE, "approving a promotion to live")
    version = get_version(ctx, version_id)
    current = PromotionState(version.promotion_state)
    if current in {S.LIVE, S.RETIRED}:
        raise TransitionError(
            f"version {version.version_string} of {version.module.name} is {current.value}; "
            "only a version that can still go live can be approved",
            current_state=current.value,
        )
    approval = PromotionApproval(
        version_id=version.id,
        to_state=S.LIVE.value,
        approved_by=ctx.actor.name,
        approved_by_token_id=ctx.actor.token_id,
        note=note,
        approved_at=ctx.now,
    )
    ctx.session.add(approval)
    ctx.session.flush()
    audit.record(
        ctx,
        action="module_version.approve",
        target_type="node_module_version",
        target_id=version.id,
        summary=f"approved {version.module.name} {version.version_string} for live",
        detail={"approval_id": approval.id, "note": note},
    )
    return approval
