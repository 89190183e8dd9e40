"""Rollouts in waves: the ``rollouts`` table (issue 19 item 4).

Revision ID: 0010_rollouts
Revises: 0009_supply_chain
Create Date: 2026-12-07

A new table only; nothing existing changes. Downgrade drops it (every
rollout's record goes with it; the versions stay in whatever state they are).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_rollouts"
down_revision: str | None = "0009_supply_chain"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("module_id", sa.String(length=36), nullable=False),
        sa.Column("version_id", sa.String(length=36), nullable=False),
        sa.Column("previous_version_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("template_id", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("wave_count", sa.Integer(), nullable=False),
        sa.Column("current_wave", sa.Integer(), nullable=False),
        sa.Column("next_wave_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["module_id"],
            ["node_modules.id"],
            name=op.f("fk_rollouts_module_id_node_modules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["node_module_versions.id"],
            name=op.f("fk_rollouts_version_id_node_module_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["previous_version_id"],
            ["node_module_versions.id"],
            name=op.f("fk_rollouts_previous_version_id_node_module_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["node_templates.id"],
            name=op.f("fk_rollouts_template_id_node_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index("ix_rollouts_account_state", "rollouts", ["account", "state"])
    op.create_index(op.f("ix_rollouts_module_id"), "rollouts", ["module_id"])
    op.create_index(op.f("ix_rollouts_version_id"), "rollouts", ["version_id"])


def downgrade() -> None:
    op.drop_table("rollouts")
