"""NodeScripts: signed, versioned scripts an operator runs on nodes (issue 17, exec).

Revision ID: 0008_nodescripts
Revises: 0007_instance_identity
Create Date: 2026-12-07

A new table only; downgrade drops it (the scripts registered are lost).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_nodescripts"
down_revision: str | None = "0007_instance_identity"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "node_scripts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("script_sha256", sa.String(length=64), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_scripts")),
        sa.UniqueConstraint("name", "version", name="uq_node_scripts_name_version"),
    )
    op.create_index(op.f("ix_node_scripts_name"), "node_scripts", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_node_scripts_name"), table_name="node_scripts")
    op.drop_table("node_scripts")
