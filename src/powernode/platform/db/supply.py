"""Supply-chain models: promotion policies, version evidence, OSV records, findings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from powernode.platform.db.base import ID, Base, UTCDateTime, new_id


class PromotionPolicy(Base):
    """One policy document for a module or a category (``scope``): supply/policy.py."""

    __tablename__ = "promotion_policies"
    __table_args__ = (UniqueConstraint("scope", "scope_id", name="uq_promotion_policies_scope"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    scope: Mapped[str] = mapped_column(String(16))  # "module" | "category"
    scope_id: Mapped[str] = mapped_column(ID)
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VersionEvidence(Base):
    """An SBOM, provenance, VEX or signature attached to a version, with what verifying it found."""

    __tablename__ = "version_evidence"
    __table_args__ = (UniqueConstraint("version_id", "digest", name="uq_version_evidence_digest"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_module_versions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # sbom | provenance | vex | signature
    digest: Mapped[str] = mapped_column(String(80))  # sha256 of the bytes as attached
    media_type: Mapped[str] = mapped_column(String(128))
    content: Mapped[dict[str, object]] = mapped_column(JSON)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    signer: Mapped[str | None] = mapped_column(Text)
    problem: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OsvRecord(Base):
    """One OSV record of the imported feed (the fields matching uses)."""

    __tablename__ = "osv_records"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    modified: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OsvAffected(Base):
    """(record, package name): the index that finds a package's records without a scan."""

    __tablename__ = "osv_affected"

    osv_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("osv_records.id", ondelete="CASCADE"), primary_key=True
    )
    package: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)


class VersionFinding(Base):
    """A package of a version in an OSV record's affected range (re-matched on feed change)."""

    __tablename__ = "version_findings"
    __table_args__ = (
        UniqueConstraint("version_id", "osv_id", "package", name="uq_version_findings_match"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_module_versions.id", ondelete="CASCADE"), index=True
    )
    osv_id: Mapped[str] = mapped_column(String(128))
    package: Mapped[str] = mapped_column(String(255))
    installed_version: Mapped[str] = mapped_column(String(255))
    fixed_version: Mapped[str | None] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    purl: Mapped[str] = mapped_column(Text, default="")
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    summary: Mapped[str] = mapped_column(Text, default="")
    found_at: Mapped[datetime] = mapped_column(UTCDateTime)
