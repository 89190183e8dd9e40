"""Fleet bookkeeping: FleetEvent, Task (the lease queue) and DiskImagePublication."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from powernode.platform.db.base import ID, Base, UTCDateTime, enum_check, new_id


class TaskState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FleetEvent(Base):
    """Something that happened in the fleet (kinds like ``instance.enrolled``).

    Events an agent posts carry its own event id in ``agent_event_id``; the
    unique index on (instance, agent event id) is what makes a resent batch
    store nothing twice (docs/node-api.md).
    """

    __tablename__ = "fleet_events"
    __table_args__ = (
        Index("ix_fleet_events_agent_event", "instance_id", "agent_event_id", unique=True),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(128), index=True)
    severity: Mapped[str] = mapped_column(String(16), default="info")
    node_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("nodes.id", ondelete="SET NULL"), index=True
    )
    instance_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_instances.id", ondelete="SET NULL"), index=True
    )
    payload: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    agent_event_id: Mapped[str | None] = mapped_column(String(64))


class Task(Base):
    """Work for an agent or a worker; leased with FOR UPDATE SKIP LOCKED on PostgreSQL.

    ``attempts`` counts leases; a lease not acked by ``lease_expires_at`` is
    offered again (visibility timeout); ``available_at`` is when the task is
    next offered: a retry's backoff, or a leased task's ``lease_expires_at``;
    past ``max_attempts`` the task is ``failed``. ``lease_owner`` is the
    instance id the lease went to.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        enum_check("state", "state", TaskState),
        Index("ix_tasks_state_instance", "state", "instance_id"),
        # The lease reads this in order and stops at n rows (migration
        # 0004_task_lease_index says why it is partial).
        Index(
            "ix_tasks_offerable",
            "instance_id",
            "available_at",
            "created_at",
            "id",
            postgresql_where=text("state IN ('queued', 'leased')"),
            sqlite_where=text("state IN ('queued', 'leased')"),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=TaskState.QUEUED.value)
    instance_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_instances.id", ondelete="CASCADE")
    )
    payload: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[dict[str, object] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Added by revision 0003 (at the end of the table, where ALTER TABLE puts them); declared
    # in that order so a new database made from the models (db/fresh.py) has the same columns.
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DiskImagePublication(Base):
    """A boot artifact published by the image builder (seed 002 variants)."""

    __tablename__ = "disk_image_publications"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    arch: Mapped[str] = mapped_column(String(16))
    variant: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(128))
    artifact_ref: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(200))
    build_manifest: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
