"""Node API: bootstrap tokens, node certificates, agent status, task retries, event dedup.

Revision ID: 0003_node_api
Revises: 0002_ingest
Create Date: 2026-11-24

``tasks.available_at`` is filled from ``created_at`` for rows that exist,
then made NOT NULL; new columns on existing tables are added with
``batch_alter_table`` so SQLite (which cannot ALTER a column's nullability)
rebuilds the table and PostgreSQL alters it in place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_node_api"
down_revision: str | None = "0002_ingest"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "bootstrap_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["node_instances.id"],
            name=op.f("fk_bootstrap_tokens_instance_id_node_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bootstrap_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_bootstrap_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_bootstrap_tokens_instance_id"), "bootstrap_tokens", ["instance_id"], unique=False
    )
    op.create_table(
        "node_certificates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["node_instances.id"],
            name=op.f("fk_node_certificates_instance_id_node_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_certificates")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_node_certificates_fingerprint")),
        sa.UniqueConstraint("serial", name=op.f("uq_node_certificates_serial")),
    )
    op.create_index(
        op.f("ix_node_certificates_instance_id"),
        "node_certificates",
        ["instance_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_node_certificates_revoked_at"), "node_certificates", ["revoked_at"], unique=False
    )
    op.create_table(
        "node_agent_status",
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("mounts", sa.JSON(), nullable=False),
        sa.Column("load", sa.JSON(), nullable=False),
        sa.Column("mem", sa.JSON(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["node_instances.id"],
            name=op.f("fk_node_agent_status_instance_id_node_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_node_agent_status")),
    )
    with op.batch_alter_table("fleet_events") as batch:
        batch.add_column(sa.Column("agent_event_id", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_fleet_events_agent_event",
        "fleet_events",
        ["instance_id", "agent_event_id"],
        unique=True,
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3")
        )
        batch.add_column(sa.Column("available_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE tasks SET available_at = created_at")
    with op.batch_alter_table("tasks") as batch:
        batch.alter_column("max_attempts", server_default=None)
        batch.alter_column("available_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("finished_at")
        batch.drop_column("available_at")
        batch.drop_column("max_attempts")
    op.drop_index("ix_fleet_events_agent_event", table_name="fleet_events")
    with op.batch_alter_table("fleet_events") as batch:
        batch.drop_column("agent_event_id")
    op.drop_table("node_agent_status")
    op.drop_index(op.f("ix_node_certificates_revoked_at"), table_name="node_certificates")
    op.drop_index(op.f("ix_node_certificates_instance_id"), table_name="node_certificates")
    op.drop_table("node_certificates")
    op.drop_index(op.f("ix_bootstrap_tokens_instance_id"), table_name="bootstrap_tokens")
    op.drop_table("bootstrap_tokens")
