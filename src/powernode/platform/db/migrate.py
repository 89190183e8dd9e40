"""Run the Alembic migrations programmatically (startup and ``platform migrate``)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the database to ``revision`` (default: every head, so parallel branches of
    migrations that have not been merged yet all apply)."""
    log.info("migrating %s to %s", engine.url.render_as_string(hide_password=True), revision)
    command.upgrade(_config(engine), revision)


def current_revisions(engine: Engine) -> tuple[str, ...]:
    """The revisions the database is at (one per unmerged branch; empty when new)."""
    with engine.connect() as conn:
        return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def head_revisions() -> tuple[str, ...]:
    """The newest revision of every branch in the migration scripts."""
    return tuple(sorted(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()))
