"""Ingest: webhook deliveries (replay guard) and the module ingest queue.

Revision ID: 0002_ingest
Revises: 0001
Create Date: 2026-11-23

A branch next to 0002_node_api (both revise 0001); a merge revision joins them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_ingest"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=128), nullable=False),
        sa.Column("module_id", sa.String(length=36), nullable=True),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["module_id"],
            ["node_modules.id"],
            name=op.f("fk_webhook_deliveries_module_id_node_modules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("provider", "delivery_id", name="uq_webhook_deliveries_delivery"),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_module_id"), "webhook_deliveries", ["module_id"], unique=False
    )
    op.create_index(
        op.f("ix_webhook_deliveries_received_at"),
        "webhook_deliveries",
        ["received_at"],
        unique=False,
    )
    op.create_table(
        "module_ingests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("module_id", sa.String(length=36), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("artifact_ref", sa.Text(), nullable=True),
        sa.Column("version_id", sa.String(length=36), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'built', 'rejected', 'failed')",
            name=op.f("ck_module_ingests_state"),
        ),
        sa.ForeignKeyConstraint(
            ["module_id"],
            ["node_modules.id"],
            name=op.f("fk_module_ingests_module_id_node_modules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["node_module_versions.id"],
            name=op.f("fk_module_ingests_version_id_node_module_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_module_ingests")),
        sa.UniqueConstraint("module_id", "tag", name="uq_module_ingests_module_tag"),
    )
    op.create_index(
        op.f("ix_module_ingests_module_id"), "module_ingests", ["module_id"], unique=False
    )
    op.create_index(op.f("ix_module_ingests_state"), "module_ingests", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_module_ingests_state"), table_name="module_ingests")
    op.drop_index(op.f("ix_module_ingests_module_id"), table_name="module_ingests")
    op.drop_table("module_ingests")
    op.drop_index(op.f("ix_webhook_deliveries_received_at"), table_name="webhook_deliveries")
    op.drop_index(op.f("ix_webhook_deliveries_module_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
