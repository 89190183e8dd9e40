"""Sensors: periodic checks that turn a stale state into a warning FleetEvent.

Seed 003: "The module_promotion_sensor warns if a version has been in
staging more than 24 h without operator action." One warning per stay in
staging: a version promoted to staging again later warns again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.platform.db import FleetEvent, NodeModuleVersion, PromotionState

log = logging.getLogger(__name__)

STAGING_MAX_AGE = timedelta(hours=24)
STAGING_OVERDUE = "module_version.staging_overdue"
MAX_PER_RUN = 500


def staging_sensor(
    session: Session, now: datetime, max_age: timedelta = STAGING_MAX_AGE
) -> list[FleetEvent]:
    """Add a warning event for each version in staging since before ``now - max_age``."""
    overdue = session.scalars(
        select(NodeModuleVersion)
        .where(
            NodeModuleVersion.promotion_state == PromotionState.STAGING.value,
            NodeModuleVersion.promoted_at <= now - max_age,
        )
        .order_by(NodeModuleVersion.promoted_at, NodeModuleVersion.id)
        .limit(MAX_PER_RUN)
    ).all()
    if not overdue:
        return []
    oldest = min(v.promoted_at for v in overdue if v.promoted_at is not None)
    # Payloads are JSON (no portable index into them), so the warnings already given
    # are read back and matched here; there are at most as many as overdue versions.
    warned = {
        (e.payload.get("version_id"), e.payload.get("staging_since"))
        for e in session.scalars(
            select(FleetEvent).where(
                FleetEvent.kind == STAGING_OVERDUE, FleetEvent.occurred_at >= oldest
            )
        )
    }
    events = []
    for v in overdue:
        assert v.promoted_at is not None  # the query compared it
        since = v.promoted_at.isoformat()
        if (v.id, since) in warned:
            continue
        hours = int((now - v.promoted_at).total_seconds() // 3600)
        event = FleetEvent(
            kind=STAGING_OVERDUE,
            severity="warning",
            payload={
                "module": v.module.name,
                "version_string": v.version_string,
                "version_id": v.id,
                "staging_since": since,
                "hours": hours,
                "message": f"{v.module.name} {v.version_string} has been in staging for "
                f"{hours} h without operator action: promote it to blessed or demote it",
            },
            occurred_at=now,
        )
        session.add(event)
        events.append(event)
        log.warning("%s %s in staging for %d h", v.module.name, v.version_string, hours)
    return events
