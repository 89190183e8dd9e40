"""Initial schema and the seeded catalog (categories, templates ``base`` and ``hardened``).

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Seed values are written out here, not imported, so this revision stays what it
was when later code changes. Category positions follow core/priority.py
(seed 003 numbers network 60, container runtimes 70, userland 90; system-base
10 and security-hardening 80 are our choice, explained there).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

CATEGORIES = (
    ("system-base", "System base", 10),
    ("network-overlay", "Network overlay", 60),
    ("container-runtimes", "Container runtimes", 70),
    ("security-hardening", "Security hardening", 80),
    ("userland", "Userland", 90),
)
TEMPLATES = (
    ("base", "Minimal node: assign system-base and the modules it needs."),
    ("hardened", "Base plus security-hardening modules for exposed nodes."),
)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=255), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"], unique=False)
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)

    op.create_table(
        "disk_image_publications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("arch", sa.String(length=16), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("artifact_ref", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("build_manifest", sa.JSON(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disk_image_publications")),
    )
    op.create_table(
        "node_module_categories",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_module_categories")),
        sa.UniqueConstraint("slug", name=op.f("uq_node_module_categories_slug")),
    )
    op.create_table(
        "node_templates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_templates")),
        sa.UniqueConstraint("account", "name", name="uq_node_templates_account_name"),
    )
    op.create_table(
        "node_modules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category_id", sa.String(length=36), nullable=False),
        sa.Column("variety", sa.String(length=16), nullable=False),
        sa.Column("parent_module_id", sa.String(length=36), nullable=True),
        sa.Column("cosign_identity_regexp", sa.Text(), nullable=True),
        sa.Column("cosign_issuer_regexp", sa.Text(), nullable=True),
        sa.Column("cosign_public_key", sa.Text(), nullable=True),
        sa.Column("require_approval", sa.Boolean(), nullable=False),
        sa.Column("gitea_repo_full_name", sa.String(length=255), nullable=True),
        sa.Column("github_repo_full_name", sa.String(length=255), nullable=True),
        sa.Column("webhook_secret_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "variety IN ('subscription', 'config', 'instance')",
            name=op.f("ck_node_modules_variety"),
        ),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["node_module_categories.id"],
            name=op.f("fk_node_modules_category_id_node_module_categories"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["parent_module_id"],
            ["node_modules.id"],
            name=op.f("fk_node_modules_parent_module_id_node_modules"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_modules")),
        sa.UniqueConstraint("account", "name", name="uq_node_modules_account_name"),
    )
    op.create_index(
        op.f("ix_node_modules_category_id"), "node_modules", ["category_id"], unique=False
    )
    op.create_index(
        op.f("ix_node_modules_parent_module_id"), "node_modules", ["parent_module_id"], unique=False
    )

    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("template_id", sa.String(length=36), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["node_templates.id"],
            name=op.f("fk_nodes_template_id_node_templates"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("account", "hostname", name="uq_nodes_account_hostname"),
    )
    op.create_index(op.f("ix_nodes_template_id"), "nodes", ["template_id"], unique=False)

    op.create_table(
        "node_instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("template_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_ref", sa.String(length=255), nullable=True),
        sa.Column("running_module_digests", sa.JSON(), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'provisioning', 'running', 'terminating', "
            "'terminated', 'failed')",
            name=op.f("ck_node_instances_status"),
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_instances_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["node_templates.id"],
            name=op.f("fk_node_instances_template_id_node_templates"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_instances")),
    )
    op.create_index(op.f("ix_node_instances_node_id"), "node_instances", ["node_id"], unique=False)
    op.create_index(
        op.f("ix_node_instances_template_id"), "node_instances", ["template_id"], unique=False
    )

    op.create_table(
        "node_module_assignments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("template_id", sa.String(length=36), nullable=False),
        sa.Column("module_id", sa.String(length=36), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("effective_priority", sa.Integer(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["module_id"],
            ["node_modules.id"],
            name=op.f("fk_node_module_assignments_module_id_node_modules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["node_templates.id"],
            name=op.f("fk_node_module_assignments_template_id_node_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_module_assignments")),
        sa.UniqueConstraint("template_id", "module_id", name="uq_node_module_assignments_pair"),
    )
    op.create_index(
        op.f("ix_node_module_assignments_module_id"),
        "node_module_assignments",
        ["module_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_node_module_assignments_template_id"),
        "node_module_assignments",
        ["template_id"],
        unique=False,
    )

    op.create_table(
        "node_module_versions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("module_id", sa.String(length=36), nullable=False),
        sa.Column("version_string", sa.String(length=128), nullable=False),
        sa.Column("promotion_state", sa.String(length=16), nullable=False),
        sa.Column("composefs_digest", sa.String(length=200), nullable=True),
        sa.Column("fsverity_root_hash", sa.String(length=200), nullable=True),
        sa.Column("cosign_verified", sa.Boolean(), nullable=False),
        sa.Column("artifact_ref", sa.Text(), nullable=True),
        sa.Column("sbom_ref", sa.Text(), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("file_list", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "promotion_state IN ('built', 'staging', 'blessed', 'live', 'retired')",
            name=op.f("ck_node_module_versions_promotion_state"),
        ),
        sa.ForeignKeyConstraint(
            ["module_id"],
            ["node_modules.id"],
            name=op.f("fk_node_module_versions_module_id_node_modules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_module_versions")),
        sa.UniqueConstraint("module_id", "version_string", name="uq_node_module_versions_module"),
    )
    op.create_index(
        op.f("ix_node_module_versions_module_id"),
        "node_module_versions",
        ["module_id"],
        unique=False,
    )

    op.create_table(
        "fleet_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=128), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.Column("instance_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["node_instances.id"],
            name=op.f("fk_fleet_events_instance_id_node_instances"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_fleet_events_node_id_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_events")),
    )
    op.create_index(
        op.f("ix_fleet_events_instance_id"), "fleet_events", ["instance_id"], unique=False
    )
    op.create_index(op.f("ix_fleet_events_kind"), "fleet_events", ["kind"], unique=False)
    op.create_index(op.f("ix_fleet_events_node_id"), "fleet_events", ["node_id"], unique=False)
    op.create_index(
        op.f("ix_fleet_events_occurred_at"), "fleet_events", ["occurred_at"], unique=False
    )

    op.create_table(
        "promotion_approvals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("version_id", sa.String(length=36), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=False),
        sa.Column("approved_by_token_id", sa.String(length=36), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["node_module_versions.id"],
            name=op.f("fk_promotion_approvals_version_id_node_module_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_approvals")),
    )
    op.create_index(
        op.f("ix_promotion_approvals_version_id"),
        "promotion_approvals",
        ["version_id"],
        unique=False,
    )

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('queued', 'leased', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_tasks_state"),
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["node_instances.id"],
            name=op.f("fk_tasks_instance_id_node_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index("ix_tasks_state_instance", "tasks", ["state", "instance_id"], unique=False)
    _seed()


def _seed() -> None:
    now = datetime.now(UTC)
    categories = sa.table(
        "node_module_categories",
        sa.column("id", sa.String),
        sa.column("slug", sa.String),
        sa.column("name", sa.String),
        sa.column("position", sa.Integer),
    )
    op.bulk_insert(
        categories,
        [
            {"id": str(uuid.uuid4()), "slug": slug, "name": name, "position": pos}
            for slug, name, pos in CATEGORIES
        ],
    )
    templates = sa.table(
        "node_templates",
        sa.column("id", sa.String),
        sa.column("account", sa.String),
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        templates,
        [
            {
                "id": str(uuid.uuid4()),
                "account": "default",
                "name": name,
                "description": text,
                "created_at": now,
            }
            for name, text in TEMPLATES
        ],
    )


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("promotion_approvals")
    op.drop_table("fleet_events")
    op.drop_table("node_module_versions")
    op.drop_table("node_module_assignments")
    op.drop_table("node_instances")
    op.drop_table("nodes")
    op.drop_table("node_modules")
    op.drop_table("node_templates")
    op.drop_table("node_module_categories")
    op.drop_table("disk_image_publications")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
