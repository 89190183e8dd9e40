"""Retention: the tables that grow with the fleet, trimmed by age and count in small batches.

``fleet_events`` (agents' events, platform events), ``audit_log`` (operator
writes) and ``webhook_deliveries`` (the replay guard) gain rows for as long
as the platform runs; nothing else does (``node_agent_status`` is one row per
instance, updated in place). The worker calls :func:`purge` every round
(worker.py) with the policy of the platform settings (``retention_*``,
docs/deploy.md "Retention").

Each batch is ONE statement in its own short transaction::

    DELETE FROM t WHERE id IN (SELECT id FROM t WHERE <old> ORDER BY <time>, id LIMIT n)

so a writer waits for at most one batch: on SQLite the batch holds the single
write lock only while it deletes its ``n`` rows (``BEGIN IMMEDIATE`` … commit),
on PostgreSQL it locks only the rows it deletes, which no writer updates.
Two workers purging at once delete disjoint or already-deleted rows: the
second's ``DELETE`` of a row the first removed deletes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, CursorResult, Engine, and_, delete, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from powernode.platform.db import AuditLogEntry, FleetEvent, WebhookDelivery
from powernode.platform.db.base import Base
from powernode.platform.db.session import write_session
from powernode.platform.settings import Settings


@dataclass(frozen=True)
class Rule:
    """Rows older than ``max_age`` go (None: any age); past ``max_rows`` the oldest (0: no cap)."""

    max_age: timedelta | None = None
    max_rows: int = 0

    @property
    def active(self) -> bool:
        return self.max_age is not None or self.max_rows > 0


@dataclass(frozen=True)
class RetentionPolicy:
    rules: dict[str, Rule] = field(default_factory=dict)  # table name -> rule
    batch_size: int = 1000
    max_batches: int = 100  # per table per call

    @classmethod
    def from_settings(cls, s: Settings) -> RetentionPolicy:
        def rule(days: float, rows: int) -> Rule:
            return Rule(timedelta(days=days) if days > 0 else None, rows)

        return cls(
            rules={
                "fleet_events": rule(s.retention_events_days, s.retention_events_max_rows),
                "audit_log": rule(s.retention_audit_days, s.retention_audit_max_rows),
                "webhook_deliveries": rule(
                    s.retention_deliveries_days, s.retention_deliveries_max_rows
                ),
            },
            batch_size=s.retention_batch_size,
            max_batches=s.retention_max_batches,
        )


# table -> (model, its time column); every one has an index on the time column.
TABLES: dict[str, tuple[type[Base], InstrumentedAttribute[datetime]]] = {
    "fleet_events": (FleetEvent, FleetEvent.occurred_at),
    "audit_log": (AuditLogEntry, AuditLogEntry.at),
    "webhook_deliveries": (WebhookDelivery, WebhookDelivery.received_at),
}


def _old(engine: Engine, name: str, rule: Rule, now: datetime) -> ColumnElement[bool] | None:
    """The condition of this table's rows that go; None when none do."""
    model, at = TABLES[name]
    row_id: InstrumentedAttribute[str] = model.id  # type: ignore[attr-defined]
    conds: list[ColumnElement[bool]] = []
    if rule.max_age is not None:
        conds.append(at < now - rule.max_age)
    if rule.max_rows > 0:
        # The newest row past the cap, in (time, id) order: it and every older row go.
        with engine.connect() as c:
            edge = c.execute(
                select(at, row_id).order_by(at.desc(), row_id.desc()).offset(rule.max_rows).limit(1)
            ).first()
        if edge is not None:
            conds.append(or_(at < edge[0], and_(at == edge[0], row_id <= edge[1])))
    if not conds:
        return None
    return or_(false(), *conds)


def purge_table(
    engine: Engine,
    name: str,
    rule: Rule,
    now: datetime,
    *,
    batch_size: int,
    max_batches: int,
    on_batch: Callable[[str, int], None] | None = None,
) -> int:
    """Delete this table's old rows, ``batch_size`` per transaction; how many went."""
    if name not in TABLES:
        raise ValueError(f"no retention for table {name!r}: one of {', '.join(TABLES)}")
    old = _old(engine, name, rule, now)
    if old is None:
        return 0
    model, at = TABLES[name]
    row_id: InstrumentedAttribute[str] = model.id  # type: ignore[attr-defined]
    batch = select(row_id).where(old).order_by(at, row_id).limit(batch_size)
    total = 0
    for _ in range(max_batches):
        with write_session(engine) as s:
            result = s.execute(
                delete(model).where(row_id.in_(batch)).execution_options(synchronize_session=False)
            )
            deleted = result.rowcount if isinstance(result, CursorResult) else 0
            s.commit()
        total += deleted
        if on_batch is not None:
            on_batch(name, deleted)
        if deleted < batch_size:
            break
    return total


def purge(
    engine: Engine,
    policy: RetentionPolicy,
    now: datetime,
    *,
    on_batch: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Apply ``policy`` to every table it names; rows deleted per table."""
    out: dict[str, int] = {}
    for name, rule in policy.rules.items():
        if not rule.active:
            continue
        out[name] = purge_table(
            engine,
            name,
            rule,
            now,
            batch_size=policy.batch_size,
            max_batches=policy.max_batches,
            on_batch=on_batch,
        )
    return out
