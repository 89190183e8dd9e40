"""Bring the database to the head revision (startup and ``platform migrate``).

Three cases, cheapest first: a database already at head is left alone (one
query, no Alembic import); an empty one is made at head in one go
(:mod:`.fresh`); anything else runs the Alembic migration chain.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from powernode.platform.db import fresh

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - only when there is something to migrate

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the database to ``revision`` (default: every head, so parallel branches of
    migrations that have not been merged yet all apply)."""
    if revision == "heads":
        if fresh.at_head(engine):
            return
        if fresh.create_at_head(engine, now=datetime.now(UTC)):
            return
    run_migrations(engine, revision)


def run_migrations(engine: Engine, revision: str = "heads") -> None:
    """The Alembic migration chain from wherever the database is to ``revision``."""
    from alembic import command  # noqa: PLC0415

    log.info("migrating %s to %s", engine.url.render_as_string(hide_password=True), revision)
    command.upgrade(_config(engine), revision)


def current_revisions(engine: Engine) -> tuple[str, ...]:
    """The revisions the database is at (one per unmerged branch; empty when new)."""
    with engine.connect() as conn:
        return fresh.revisions(conn) or ()


def head_revisions() -> tuple[str, ...]:
    """The newest revision of every branch in the migration scripts."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    return tuple(sorted(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()))
