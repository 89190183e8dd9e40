"""Webhook deliveries: the signed body's SHA-256, unique per module (replay guard).

Revision ID: 0005_webhook_body_replay
Revises: 0004_task_lease_index
Create Date: 2026-12-07

The delivery id (``X-Gitea-Delivery`` / ``X-GitHub-Delivery``) is not covered
by the sender's HMAC, and native Gitea/GitHub payloads carry no timestamp:
the same signed body under a new delivery id was accepted as a new delivery
(issue 13, item 6). A delivery is now also unique by ``(module_id,
body_sha256)``, enforced by the database so two concurrent identical
deliveries make one row.

Rows from before this revision have no body hash: they get
``unknown:<id>``, distinct and never the hex of a real body. Downgrade
drops the column and its constraint (``batch_alter_table``: SQLite cannot
drop a constraint in place).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_webhook_body_replay"
down_revision: str | None = "0004_task_lease_index"
branch_labels: str | None = None
depends_on: str | None = None

_UNIQUE = "uq_webhook_deliveries_body"


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("body_sha256", sa.String(length=64), nullable=True))
    op.execute("UPDATE webhook_deliveries SET body_sha256 = 'unknown:' || id")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("body_sha256", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint(_UNIQUE, ["module_id", "body_sha256"])


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_constraint(_UNIQUE, type_="unique")
        batch.drop_column("body_sha256")
