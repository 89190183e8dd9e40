"""NodeScripts the operator registered: one row per (name, version), the signed document.

``document`` is the NodeScript as registered (signing/nodescript.py), signature
included; the platform never alters it (the signature covers it). Versions
of a name only grow: registering one at or below the newest is refused
(services/nodescripts.py), and the unique (name, version) makes two racing
registrations of one version end in one row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from powernode.platform.db.base import ID, Base, UTCDateTime, new_id


class NodeScriptRow(Base):
    __tablename__ = "node_scripts"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_node_scripts_name_version"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    script_sha256: Mapped[str] = mapped_column(String(64))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
