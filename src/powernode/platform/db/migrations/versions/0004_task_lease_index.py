"""Tasks: a partial index for the lease query's queued branch.

Revision ID: 0004_task_lease_index
Revises: 0003_node_api
Create Date: 2026-11-25

The lease picks an instance's due queued tasks in ``(available_at,
created_at, id)`` order (services/nodeapi/tasks.py). Without this index
PostgreSQL read every row of ``ix_tasks_state_instance`` for the instance
and sorted them (2.75 ms per lease with a few thousand queued tasks); with
it the scan reads the first ``n`` rows in order and stops (0.06 ms).
Partial (``WHERE state = 'queued'``): finished tasks, which are most rows
over time, are not in it, so it stays small. PostgreSQL and SQLite (3.8+)
both support partial indexes; the same predicate is given to each.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_task_lease_index"
down_revision: str | None = "0003_node_api"
branch_labels: str | None = None
depends_on: str | None = None

_WHERE = sa.text("state = 'queued'")


def upgrade() -> None:
    op.create_index(
        "ix_tasks_queued_lease",
        "tasks",
        ["instance_id", "available_at", "created_at", "id"],
        unique=False,
        postgresql_where=_WHERE,
        sqlite_where=_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_queued_lease", table_name="tasks")
