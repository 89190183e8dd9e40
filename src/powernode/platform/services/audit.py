"""The audit log: one row per operator write, in the write's own transaction.

Because the row is added to the same session as the change, a write that
fails leaves neither the change nor an audit row (refusals are logged).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

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
    detail: dict[str, Any] | None = None,
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


def list_entries(
    ctx: Ctx,
    *,
    action: str | None = None,
    limit: int = 100,
    actor: str | None = None,
    before: tuple[datetime, str] | None = None,
) -> list[AuditLogEntry]:
    """Newest first; ``before``: the keyset cursor (at, id) of the previous page's last row."""
    q = select(AuditLogEntry).order_by(AuditLogEntry.at.desc(), AuditLogEntry.id)
    if action:
        q = q.where(AuditLogEntry.action == action)
    if actor:
        q = q.where(AuditLogEntry.actor == actor)
    if before is not None:
        at, entry_id = before
        q = q.where(
            (AuditLogEntry.at < at) | ((AuditLogEntry.at == at) & (AuditLogEntry.id > entry_id))
        )
    return list(ctx.session.scalars(q.limit(min(limit, MAX_LIST))))


def count(ctx: Ctx) -> int:
    return ctx.session.scalar(select(func.count()).select_from(AuditLogEntry)) or 0
