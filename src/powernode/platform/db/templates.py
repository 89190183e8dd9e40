"""Template models: NodeTemplate and NodeModuleAssignment (template x module)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from powernode.platform.db.base import ID, Base, UTCDateTime, new_id
from powernode.platform.db.catalog import NodeModule


class NodeTemplate(Base):
    __tablename__ = "node_templates"
    __table_args__ = (UniqueConstraint("account", "name", name="uq_node_templates_account_name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    account: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    assignments: Mapped[list[NodeModuleAssignment]] = relationship(
        back_populates="template", cascade="all, delete-orphan", passive_deletes=True
    )


class NodeModuleAssignment(Base):
    """A module assigned to a template, with its priority in that template's stack.

    ``priority`` is the module's category position (core.priority, the
    operator's scale); ``effective_priority`` is the operator's override as
    typed (seed 003: PATCH .../node_module_assignments/<id>), None when not
    overridden. The variety orders equal priorities; it is not in the number.
    """

    __tablename__ = "node_module_assignments"
    __table_args__ = (
        UniqueConstraint("template_id", "module_id", name="uq_node_module_assignments_pair"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    template_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_templates.id", ondelete="CASCADE"), index=True
    )
    module_id: Mapped[str] = mapped_column(
        ID, ForeignKey("node_modules.id", ondelete="CASCADE"), index=True
    )
    priority: Mapped[int] = mapped_column(Integer)
    effective_priority: Mapped[int | None] = mapped_column(Integer)
    # Metadata handed to the agent at boot (seed 003: {"purpose": "edge-cdn-tokyo"}).
    assignment_metadata: Mapped[dict[str, object]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    template: Mapped[NodeTemplate] = relationship(back_populates="assignments")
    module: Mapped[NodeModule] = relationship(lazy="joined")
