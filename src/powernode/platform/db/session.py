"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from powernode.errors import ConfigError

log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """Pick the driver we ship: ``postgresql://`` means psycopg 3, not psycopg2."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(
            f"database URL {url!r} is not valid: use sqlite:///PATH or postgresql://HOST/DB"
        ) from e
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: "
            "only sqlite:// and postgresql:// are supported"
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while a writer commits; foreign_keys makes the
    # ON DELETE CASCADE/RESTRICT rules hold as they do on PostgreSQL. The busy
    # timeout first: switching a new file to WAL takes a lock another process
    # starting on the same file may hold (the demo's token and platform start).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


POOL_SIZE = 20  # connections kept open to PostgreSQL per process
POOL_OVERFLOW = 20  # more, opened under a burst and closed when returned


def make_engine(url: str) -> Engine:
    """An engine for ``url``; creates the SQLite file's directory when missing."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # The request thread pool runs up to 40 handlers at once (anyio's default):
    # with SQLAlchemy's default 5 + 10 overflow, connections past the fifth were
    # closed on return and opened again under load (a PostgreSQL backend start
    # per request, bench/bench_leases.py). pre_ping keeps a restarted database
    # from failing the first requests after it returns.
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: responses are built from objects after commit.
    return sessionmaker(engine, expire_on_commit=False)
