"""Node API bookkeeping: bootstrap tokens, node certificates, the agent's last report.

A bootstrap token is stored as its SHA-256 only (like API tokens): the secret
is shown once to the operator and never again. ``used_at`` makes it single
use; the enroll transaction sets it with a conditional UPDATE, so two
concurrent enrolls with one token cannot both win.

A node certificate row is the platform's record of what its node CA issued
(serial, SHA-256 fingerprint of the DER, validity); ``revoked_at`` records
a revocation. Which certificate an instance may use is not decided here but
on the instance row (``node_instances.cert_serial``/``new_cert_serial``),
read on every request (services/nodeapi/identity.py).

``NodeRateBucket`` is a token bucket per instance and kind of request
(``events``), shared by every platform process (services/nodeapi/ratelimit.py).

``NodeAgentStatus`` holds what the heartbeat reports beyond the columns the
drift report reads on ``node_instances`` (``last_heartbeat_at``,
``running_module_digests``): one row per instance, upserted by the
heartbeat flusher.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from powernode.platform.db.base import ID, Base, UTCDateTime, new_id


class BootstrapToken(Base):
    __tablename__ = "bootstrap_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_instances.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NodeCertificate(Base):
    __tablename__ = "node_certificates"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_instances.id", ondelete="CASCADE"), index=True
    )
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    # "enroll" or "rotate": how the node came by it.
    reason: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class NodeAgentStatus(Base):
    __tablename__ = "node_agent_status"

    instance_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_instances.id", ondelete="CASCADE"), primary_key=True
    )
    boot_id: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[str] = mapped_column(String(64))
    mounts: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    load: Mapped[list[float]] = mapped_column(JSON, default=list)
    mem: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NodeRateBucket(Base):
    __tablename__ = "node_rate_buckets"

    instance_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_instances.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
