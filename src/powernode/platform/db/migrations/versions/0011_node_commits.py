"""Node-made versions: ``node_module_versions.committed_by_instance_id`` (issue 17 item 2).

Revision ID: 0011_node_commits
Revises: 0010_rollouts
Create Date: 2026-12-07

One nullable column naming the instance that made a version
(``powernode-agent commit``, announced through ``POST /node_api/module_versions``);
every existing version was not made on a node and keeps NULL. An instance
deleted later leaves its versions, unattributed (ON DELETE SET NULL).
Downgrade drops the column: the versions stay, no longer attributed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_node_commits"
down_revision: str | None = "0010_rollouts"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("node_module_versions") as batch:
        batch.add_column(sa.Column("committed_by_instance_id", sa.String(length=36), nullable=True))
        batch.create_index(
            op.f("ix_node_module_versions_committed_by_instance_id"),
            ["committed_by_instance_id"],
            unique=False,
        )
        batch.create_foreign_key(
            op.f("fk_node_module_versions_committed_by_instance_id_node_instances"),
            "node_instances",
            ["committed_by_instance_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("node_module_versions") as batch:
        batch.drop_constraint(
            op.f("fk_node_module_versions_committed_by_instance_id_node_instances"),
            type_="foreignkey",
        )
        batch.drop_index(op.f("ix_node_module_versions_committed_by_instance_id"))
        batch.drop_column("committed_by_instance_id")
