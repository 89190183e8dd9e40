"""The audit log: one row per operator write, in the write's own transaction.

Because the row is added to the same session as the change, a write that
fails leaves neither the change nor an audit row (refusals are logged).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from powernode.platform.db import AuditLogEntry
from powernode.platform.services.context import Ctx

log = logging.getLogger(__name__)

MAX_LIST = 1000


def record(
    ctx: Ctx,
    *,
    action: str,
    target_type: str,
    target_id: str | None,
    summary: str,
    detail: dict[str, object] | None = None,
) -> AuditLogEntry:
    entry = AuditLogEntry(
        at=ctx.now,
        actor=ctx.actor.name,
        token_id=ctx.actor.token_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        summary=summary,
        detail=detail or {},
    )
    ctx.session.add(entry)
    log.info("audit: %s %s %s by %s", action, target_type, target_id, ctx.actor.name)
    return entry


def list_entries(ctx: Ctx, *, action: str | None = None, limit: int = 100) -> list[AuditLogEntry]:
    """Newest first."""
    q = select(AuditLogEntry).order_by(AuditLogEntry.at.desc(), AuditLogEntry.id)
    if action:
        q = q.where(AuditLogEntry.action == action)
    return list(ctx.session.scalars(q.limit(min(limit, MAX_LIST))))


def count(ctx: Ctx) -> int:
    return ctx.session.scalar(select(func.count()).select_from(AuditLogEntry)) or 0
