"""Fleet models: Node (what the operator wants) and NodeInstance (what runs)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from powernode.platform.db.base import ID, Base, UTCDateTime, enum_check, new_id
from powernode.platform.db.templates import NodeTemplate


class InstanceStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("account", "hostname", name="uq_nodes_account_hostname"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    account: Mapped[str] = mapped_column(String(64), default="default")
    hostname: Mapped[str] = mapped_column(String(253))
    template_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_templates.id", ondelete="RESTRICT"), index=True
    )
    node_metadata: Mapped[dict[str, object]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    template: Mapped[NodeTemplate] = relationship(lazy="joined")
    instances: Mapped[list[NodeInstance]] = relationship(
        back_populates="node", cascade="all, delete-orphan", passive_deletes=True
    )


class NodeInstance(Base):
    __tablename__ = "node_instances"
    __table_args__ = (enum_check("status", "status", InstanceStatus),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    node_id: Mapped[str] = mapped_column(ID, ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    hostname: Mapped[str] = mapped_column(String(253))
    template_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_templates.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=InstanceStatus.PENDING.value)
    provider: Mapped[str] = mapped_column(String(64))
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    # Reported by the agent's heartbeat: {"my-redis": "sha256:…", …} (seed 004).
    running_module_digests: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The instance's one live identity (services/nodeapi/identity.py): the
    # serial of the certificate it uses, and the one its last rotation issued
    # and it has not used yet (the first request with it makes it current).
    # Any other certificate of the instance is refused; NULL, NULL: revoked.
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    new_cert_serial: Mapped[str | None] = mapped_column(String(64))
    # The last rotation, for its rate limit (node_rotate_min_interval_seconds).
    cert_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    node: Mapped[Node] = relationship(back_populates="instances")
