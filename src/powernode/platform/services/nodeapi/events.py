"""Events posted by agents, stored as FleetEvent rows, idempotent by the agent's event id.

The agent keeps events in an on-disk buffer and resends a batch whose answer
it did not see, so the same id arrives again; the unique index on
(instance_id, agent_event_id) makes the second copy a no-op. The insert is
``INSERT … ON CONFLICT DO NOTHING RETURNING`` (both databases): two
concurrent posts of one batch cannot both store it, and the count of rows
returned is the count accepted.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from powernode.platform.db import FleetEvent, NodeInstance
from powernode.platform.db.base import new_id
from powernode.platform.problems import AuthenticationError
from powernode.platform.services.context import Ctx
from powernode.platform.services.nodes import get_instance

log = logging.getLogger(__name__)

MAX_LIST = 1000


@dataclass(frozen=True)
class NodeEvent:
    id: str  # the agent's event id (a UUID)
    kind: str
    severity: str
    occurred_at: datetime
    payload: dict[str, object]


def store(session: Session, instance_id: str, events: list[NodeEvent]) -> tuple[int, int]:
    """Store the events not seen before; (accepted, duplicates). The caller commits.

    One statement: the node id is read by the INSERT itself (a scalar subquery
    on the instance row), not by a SELECT before it.
    """
    unique: dict[str, NodeEvent] = {}
    for e in events:
        unique.setdefault(e.id, e)  # the same id twice in one batch counts as a duplicate
    if not unique:
        return 0, len(events)
    rows = [
        {
            "id": new_id(),
            "kind": e.kind,
            "severity": e.severity,
            "instance_id": instance_id,
            "b_instance": instance_id,
            "payload": e.payload,
            "occurred_at": e.occurred_at,
            "agent_event_id": e.id,
        }
        for e in unique.values()
    ]
    try:
        accepted = len(session.execute(_insert(session.get_bind().dialect.name), rows).all())
    except IntegrityError as e:
        # The instance row went after the caller's identity was read (its
        # foreign key): as before, the certificate names an instance no more.
        raise AuthenticationError(
            f"instance {instance_id} named by the certificate no longer exists"
        ) from e
    return accepted, len(events) - accepted


@functools.cache
def _insert(dialect_name: str) -> ReturningInsert[tuple[str]]:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    node_of = (
        select(NodeInstance.node_id)
        .where(NodeInstance.id == bindparam("b_instance"))
        .scalar_subquery()
    )
    return cast(
        ReturningInsert[tuple[str]],
        dialect.insert(FleetEvent)
        .values(node_id=node_of)
        .on_conflict_do_nothing(index_elements=["instance_id", "agent_event_id"])
        .returning(FleetEvent.id),
    )


def list_events(ctx: Ctx, instance_id: str, *, kind: str | None, limit: int) -> list[FleetEvent]:
    """The instance's events, newest first."""
    instance = get_instance(ctx, instance_id)
    q = select(FleetEvent).where(FleetEvent.instance_id == instance.id)
    if kind:
        q = q.where(FleetEvent.kind == kind)
    q = q.order_by(FleetEvent.occurred_at.desc(), FleetEvent.id).limit(min(limit, MAX_LIST))
    return list(ctx.session.scalars(q))
