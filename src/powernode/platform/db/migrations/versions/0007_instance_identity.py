"""Node instances: one live identity on the row; per-instance rate-limit buckets.

Revision ID: 0007_instance_identity
Revises: 0006_priority_scale
Create Date: 2026-12-07

Issue 13, item 1: revocation was a list of serials each process re-read
every 5 s, and a rotation racing a revocation could commit a certificate
never revoked. Now the instance row names the certificate the instance may
use (``cert_serial``) and the one its last rotation issued, not yet used
(``new_cert_serial``); every request reads them, and enroll, rotate and
revoke change them under the row's lock (services/nodeapi/identity.py).

Upgrade fills them from the certificates on record: per instance, the newest
unrevoked certificate becomes ``new_cert_serial`` and the one before it
``cert_serial`` — an agent that rotated uses the newest, one whose rotation
answer was lost still holds the one before; the first request with either
settles it. Older certificates stop working (they were superseded). An
instance with one certificate gets it as ``cert_serial``; a terminated or
failed instance gets none. Downgrade drops the columns and the table:
the 0004 code trusts every unrevoked, unexpired certificate again.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0007_instance_identity"
down_revision: str | None = "0006_priority_scale"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("node_instances") as batch:
        batch.add_column(sa.Column("cert_serial", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("new_cert_serial", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("cert_rotated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "node_rate_buckets",
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["node_instances.id"],
            name=op.f("fk_node_rate_buckets_instance_id_node_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "bucket", name=op.f("pk_node_rate_buckets")),
    )
    _fill_identities()


def _fill_identities() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT c.instance_id, c.serial FROM node_certificates c "
            "JOIN node_instances i ON i.id = c.instance_id "
            "WHERE c.revoked_at IS NULL AND i.status NOT IN ('terminated', 'failed') "
            "ORDER BY c.instance_id, c.issued_at, c.id"
        )
    ).all()
    serials: dict[str, list[str]] = defaultdict(list)
    for instance_id, serial in rows:
        serials[instance_id].append(serial)
    update = sa.text(
        "UPDATE node_instances SET cert_serial = :current, new_cert_serial = :new WHERE id = :id"
    )
    for instance_id, issued in serials.items():
        current, new = (issued[-2], issued[-1]) if len(issued) > 1 else (issued[-1], None)
        conn.execute(update, {"id": instance_id, "current": current, "new": new})


def downgrade() -> None:
    op.drop_table("node_rate_buckets")
    with op.batch_alter_table("node_instances") as batch:
        batch.drop_column("cert_rotated_at")
        batch.drop_column("new_cert_serial")
        batch.drop_column("cert_serial")
