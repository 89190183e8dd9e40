"""Catalog models: NodeModuleCategory, NodeModule, NodeModuleVersion, PromotionApproval."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from powernode.core.priority import Variety
from powernode.platform.db.base import ID, Base, UTCDateTime, enum_check, new_id


class PromotionState(StrEnum):
    """Seed 003: ``promotion_state`` (not lifecycle_state)."""

    BUILT = "built"
    STAGING = "staging"
    BLESSED = "blessed"
    LIVE = "live"
    RETIRED = "retired"


class NodeModuleCategory(Base):
    __tablename__ = "node_module_categories"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer)


class NodeModule(Base):
    __tablename__ = "node_modules"
    __table_args__ = (
        UniqueConstraint("account", "name", name="uq_node_modules_account_name"),
        enum_check("variety", "variety", Variety),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    account: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    category_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_module_categories.id", ondelete="RESTRICT"), index=True
    )
    variety: Mapped[str] = mapped_column(String(16), default=Variety.SUBSCRIPTION.value)
    # Config modules override their parent's config (seed 003); deleting the
    # parent is refused while children exist (RESTRICT), never silently orphaned.
    parent_module_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_modules.id", ondelete="RESTRICT"), index=True
    )
    # Trust policy: keyless (identity + issuer regexps) or a PEM public key.
    cosign_identity_regexp: Mapped[str | None] = mapped_column(Text)
    cosign_issuer_regexp: Mapped[str | None] = mapped_column(Text)
    cosign_public_key: Mapped[str | None] = mapped_column(Text)
    require_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    gitea_repo_full_name: Mapped[str | None] = mapped_column(String(255))
    github_repo_full_name: Mapped[str | None] = mapped_column(String(255))
    # The webhook secret is needed in clear to check HMACs, so it is sealed
    # (AES-GCM under the platform key, see platform/sealing.py), never stored bare.
    webhook_secret_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    category: Mapped[NodeModuleCategory] = relationship(lazy="joined")
    parent_module: Mapped[NodeModule | None] = relationship(remote_side="NodeModule.id")
    versions: Mapped[list[NodeModuleVersion]] = relationship(
        back_populates="module", cascade="all, delete-orphan", passive_deletes=True
    )


class NodeModuleVersion(Base):
    __tablename__ = "node_module_versions"
    __table_args__ = (
        UniqueConstraint("module_id", "version_string", name="uq_node_module_versions_module"),
        enum_check("promotion_state", "promotion_state", PromotionState),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    module_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_modules.id", ondelete="CASCADE"), index=True
    )
    version_string: Mapped[str] = mapped_column(String(128))
    promotion_state: Mapped[str] = mapped_column(String(16), default=PromotionState.BUILT.value)
    composefs_digest: Mapped[str | None] = mapped_column(String(200))
    fsverity_root_hash: Mapped[str | None] = mapped_column(String(200))
    cosign_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    artifact_ref: Mapped[str | None] = mapped_column(Text)
    sbom_ref: Mapped[str | None] = mapped_column(Text)
    # The parsed manifest.json of the artifact and its file list: what the
    # composition preview and the drift report feed to core.compose/resolve.
    manifest: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    file_list: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A version a node made (powernode-agent commit): the instance whose live certificate's
    # key signed it (services/nodeapi/commits.py); None for every other version.
    committed_by_instance_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("node_instances.id", ondelete="SET NULL"), index=True
    )

    module: Mapped[NodeModule] = relationship(back_populates="versions")


class PromotionApproval(Base):
    """An operator's approval for one version to go live (require_approval policy)."""

    __tablename__ = "promotion_approvals"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_module_versions.id", ondelete="CASCADE"), index=True
    )
    to_state: Mapped[str] = mapped_column(String(16))
    approved_by: Mapped[str] = mapped_column(String(128))
    approved_by_token_id: Mapped[str | None] = mapped_column(ID)
    note: Mapped[str] = mapped_column(Text, default="")
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when a promotion consumed it: one approval, one promotion.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
