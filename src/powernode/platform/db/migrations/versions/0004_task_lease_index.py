"""Tasks: one partial index the lease reads in order; leased tasks' available_at = expiry.

Revision ID: 0004_task_lease_index
Revises: 0003_node_api
Create Date: 2026-11-25

The lease (services/nodeapi/tasks.py) picks an instance's offerable tasks in
``(available_at, created_at, id)`` order. Offerable was an OR — queued and
due, or leased with the lease expired — and PostgreSQL could use no index
in that order for it: every lease scanned and sorted all of the instance's
due tasks, and a separate statement scanned all its leased ones for dead
last attempts (about 3 ms each with 3,000 of each). Now a lease also sets
``available_at`` to the lease's expiry, so offerable is one range,
``state IN ('queued', 'leased') AND available_at <= now``, which this index
answers in order, stopping after ``n`` rows. Partial: finished tasks, most
rows over time, are not in it. PostgreSQL and SQLite (3.8+) both support
partial indexes; the same predicate is given to each.

Upgrade sets ``available_at`` of tasks leased now to their expiry, which
the new lease code needs; downgrade leaves it (the old code reads
``lease_expires_at`` for leased tasks and ignores ``available_at``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_task_lease_index"
down_revision: str | None = "0003_node_api"
branch_labels: str | None = None
depends_on: str | None = None

_WHERE = sa.text("state IN ('queued', 'leased')")


def upgrade() -> None:
    op.execute(
        "UPDATE tasks SET available_at = lease_expires_at "
        "WHERE state = 'leased' AND lease_expires_at IS NOT NULL"
    )
    op.create_index(
        "ix_tasks_offerable",
        "tasks",
        ["instance_id", "available_at", "created_at", "id"],
        unique=False,
        postgresql_where=_WHERE,
        sqlite_where=_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_offerable", table_name="tasks")
