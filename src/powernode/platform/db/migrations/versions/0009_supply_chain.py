"""Supply chain: promotion policies, version evidence, OSV records and findings.

Revision ID: 0009_supply_chain
Revises: 0008_nodescripts
Create Date: 2026-12-07

Issue 18: promotion is gated by declarative policies over the evidence a
version carries (SBOM, signed provenance, VEX, signatures) and its findings
against an imported OSV feed. New tables only; downgrade drops them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_supply_chain"
down_revision: str | None = "0008_nodescripts"
branch_labels: str | None = None
depends_on: str | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "promotion_policies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.String(length=36), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_policies")),
        sa.UniqueConstraint("scope", "scope_id", name="uq_promotion_policies_scope"),
    )
    op.create_table(
        "version_evidence",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("version_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("media_type", sa.String(length=128), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("signer", sa.Text(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["node_module_versions.id"],
            name=op.f("fk_version_evidence_version_id_node_module_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version_evidence")),
        sa.UniqueConstraint("version_id", "digest", name="uq_version_evidence_digest"),
    )
    op.create_index(
        op.f("ix_version_evidence_version_id"), "version_evidence", ["version_id"], unique=False
    )
    op.create_table(
        "osv_records",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("modified", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("imported_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_osv_records")),
    )
    op.create_table(
        "osv_affected",
        sa.Column("osv_id", sa.String(length=128), nullable=False),
        sa.Column("package", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["osv_id"],
            ["osv_records.id"],
            name=op.f("fk_osv_affected_osv_id_osv_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("osv_id", "package", name=op.f("pk_osv_affected")),
    )
    op.create_index(op.f("ix_osv_affected_package"), "osv_affected", ["package"], unique=False)
    op.create_table(
        "version_findings",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("version_id", sa.String(length=36), nullable=False),
        sa.Column("osv_id", sa.String(length=128), nullable=False),
        sa.Column("package", sa.String(length=255), nullable=False),
        sa.Column("installed_version", sa.String(length=255), nullable=False),
        sa.Column("fixed_version", sa.String(length=255), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("purl", sa.Text(), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("found_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["node_module_versions.id"],
            name=op.f("fk_version_findings_version_id_node_module_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version_findings")),
        sa.UniqueConstraint("version_id", "osv_id", "package", name="uq_version_findings_match"),
    )
    op.create_index(
        op.f("ix_version_findings_version_id"), "version_findings", ["version_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("version_findings")
    op.drop_table("osv_affected")
    op.drop_table("osv_records")
    op.drop_table("version_evidence")
    op.drop_table("promotion_policies")
