"""Ingest bookkeeping: webhook deliveries (replay guard) and the ingest queue.

A ``ModuleIngest`` row is one tag of one module on its way to becoming a
NodeModuleVersion: queued by a webhook, an operator or the registry poller,
then ``built`` (the version exists), ``rejected`` (verification failed: the
reason is kept, no version is ever created) or ``failed`` (the registry could
not be read; retried up to the worker's limit).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from powernode.platform.db.base import ID, Base, UTCDateTime, enum_check, new_id
from powernode.platform.db.catalog import NodeModule


class IngestState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    BUILT = "built"
    REJECTED = "rejected"
    FAILED = "failed"


class WebhookDelivery(Base):
    """One accepted webhook; a replay of it is refused by either unique key.

    The delivery id is not covered by the sender's HMAC, so it alone cannot
    refuse a replay: the same signed body under a new id is the same delivery.
    ``body_sha256`` (SHA-256 of the raw, signed body) is unique per module,
    whatever the provider header it came with; the database, not a prior
    SELECT, decides which of two concurrent identical deliveries is first.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("provider", "delivery_id", name="uq_webhook_deliveries_delivery"),
        UniqueConstraint("module_id", "body_sha256", name="uq_webhook_deliveries_body"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[str] = mapped_column(String(128))
    # hex SHA-256 of the signed body; "unknown:<id>" for rows from before 0005
    body_sha256: Mapped[str] = mapped_column(String(64))
    module_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_modules.id", ondelete="SET NULL"), index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ModuleIngest(Base):
    """One tag of one module being (or having been) ingested."""

    __tablename__ = "module_ingests"
    __table_args__ = (
        UniqueConstraint("module_id", "tag", name="uq_module_ingests_module_tag"),
        enum_check("state", "state", IngestState),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    module_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_modules.id", ondelete="CASCADE"), index=True
    )
    tag: Mapped[str] = mapped_column(String(128))
    # webhook:gitea, webhook:github, poller, operator
    source: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=IngestState.QUEUED.value, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    artifact_ref: Mapped[str | None] = mapped_column(Text)
    version_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_module_versions.id", ondelete="SET NULL")
    )
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    module: Mapped[NodeModule] = relationship(lazy="joined")
