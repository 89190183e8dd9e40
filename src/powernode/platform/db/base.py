"""Declarative base and the column types shared by every model.

Both databases must behave the same, so:
- ids are UUID4 strings in ``CHAR(36)`` (portable, readable in the CLI);
- times are stored as UTC and always come back timezone-aware (SQLite drops
  the offset, so ``UTCDateTime`` puts it back);
- enums are short strings guarded by a CHECK constraint, not native PG enums,
  so adding a state is a plain migration on both databases.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, MetaData, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

# Deterministic constraint names, so migrations can name what they alter.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def new_id() -> str:
    return str(uuid.uuid4())


ID = String(36)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and returned timezone-aware on every dialect."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def enum_check(name: str, column: str, enum: type[StrEnum]) -> CheckConstraint:
    """CHECK that ``column`` holds one of ``enum``'s values."""
    allowed = ", ".join(f"'{m.value}'" for m in enum)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)
