"""The audit log: one row per operator write, in the write's own transaction.

Because the row is added to the same session as the change, a write that
fails leaves neither the change nor an audit row (refusals are logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import func, select

from powernode.platform.db import AuditLogEntry
from powernode.platform.services.context import READ, Ctx

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


MAX_CALL_DETAIL = 4096  # bytes of a tool call's arguments kept (JSON)


def record_call(
    ctx: Ctx, *, via: str, kind: str, name: str, arguments: Mapping[str, object]
) -> AuditLogEntry:
    """A call made on the actor's behalf by a front end that reads too (the MCP server):
    every call is recorded, reads included, under the token's identity. A write the
    call leads to is recorded again by its own service, in its own transaction."""
    ctx.actor.require(READ, f"calling {name}")
    text = json.dumps(arguments, sort_keys=True, default=str)
    kept: dict[str, object] = (
        {"arguments": dict(arguments)}
        if len(text) <= MAX_CALL_DETAIL
        else {"arguments_truncated": text[:MAX_CALL_DETAIL]}
    )
    return record(
        ctx,
        action=f"{via}.{kind}",
        target_type=f"{via}_{kind}",
        target_id=name,
        summary=f"{ctx.actor.name} called {name} over {via}",
        detail={"via": via, **kept},
    )


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
