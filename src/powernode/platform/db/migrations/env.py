"""Alembic environment: always online, on the engine the platform hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from powernode.platform.db import Base

config = context.config
engine = config.attributes["engine"]
assert isinstance(engine, Engine)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
