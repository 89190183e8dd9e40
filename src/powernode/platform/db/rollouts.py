"""Rollouts: a version going live wave by wave (issue 19 item 4).

One row per rollout. Its progress — which wave, and per instance whether it
is pending, admitted, converged, succeeded, failed or rolled back — is one
JSON document (``nodes``) advanced only by a compare-and-set on
``generation`` (services/rollouts.py), so two platform processes evaluating
the same rollout never advance it twice and a restart resumes from the row.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from powernode.platform.db.base import ID, Base, UTCDateTime, new_id


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    ABORTED = "aborted"
    COMPLETED = "completed"


class Rollout(Base):
    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_account_state", "account", "state"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    account: Mapped[str] = mapped_column(String(64), default="default")
    module_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_modules.id", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_module_versions.id", ondelete="CASCADE"), index=True
    )
    # None for an assignment rollout: a node outside a wave runs no version of the module.
    previous_version_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_module_versions.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16), default="version")  # version | assignment
    template_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_templates.id", ondelete="CASCADE")
    )
    state: Mapped[str] = mapped_column(String(16), default=RolloutState.RUNNING.value)
    policy: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    # instance id -> {"wave": int, "state": str, "admitted_at"?, "converged_at"?}
    nodes: Mapped[dict[str, dict[str, object]]] = mapped_column(JSON, default=dict)
    wave_count: Mapped[int] = mapped_column(Integer)
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    next_wave_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(1024), default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
