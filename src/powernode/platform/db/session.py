"""Engine and session factory for SQLite (embedded default) and PostgreSQL.

**Write transactions.** Every read-check-write (an outcome, a rotation, a
promotion …) must not let another writer slip in between its read and its
write. On PostgreSQL the services take row locks (``SELECT … FOR UPDATE``,
``with_for_update=True``). SQLite has no row locks — SQLAlchemy drops the
clause — and pysqlite, left to itself, issues ``BEGIN`` (deferred) only at
the first write, so a read-check-write ran its read outside any transaction
and two of them could both pass their check (issue 13, item 5). Here,
pysqlite's own transaction handling is switched off (``isolation_level =
None``, SQLAlchemy's documented recipe for pysqlite) and the engine's
``begin`` event emits the BEGIN itself:

- a connection whose execution options carry :data:`WRITE` (``True``) starts
  with ``BEGIN IMMEDIATE``: it takes SQLite's single write lock before its
  first read, so read-check-writes run one after another, as with a row lock;
- any other connection starts with ``BEGIN`` (deferred): a reader that never
  writes does not hold up writers (WAL), and writes one statement at a time.

Sessions from :func:`make_sessionmaker` are write sessions unless asked
otherwise (``write=False``); :func:`write_session` is the same for code that
holds only an engine. On PostgreSQL the option changes nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

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


WRITE = "powernode_write"
"""Execution option: this connection's transactions begin with the write lock (SQLite)."""


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # pysqlite's implicit BEGIN (before the first INSERT/UPDATE/DELETE only)
    # off: _sqlite_begin below emits every BEGIN, so reads are inside it too.
    dbapi_conn.isolation_level = None
    # WAL lets the API read while a writer commits; foreign_keys makes the
    # ON DELETE CASCADE/RESTRICT rules hold as they do on PostgreSQL. The busy
    # timeout first: switching a new file to WAL takes a lock another process
    # starting on the same file may hold (the demo's token and platform start);
    # and a BEGIN IMMEDIATE waits up to 5 s for the write lock.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=5000")
    _wal(cur)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


WAL_ATTEMPTS = 50  # x WAL_PAUSE: as long as busy_timeout
WAL_PAUSE = 0.1


def _wal(cur: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection switches the same new
    file: SQLite can answer that switch "database is locked" at once, without waiting out
    busy_timeout (four processes starting on one new file did, about one start in three,
    tests/platform/test_fresh_schema.py). WAL is kept in the file, so later connections
    find it already set."""
    for attempt in range(WAL_ATTEMPTS):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(WAL_PAUSE)


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


PING_IDLE_SECONDS = 1.0
"""A pooled PostgreSQL connection idle longer than this is pinged before it is handed out."""
_USED = "powernode_used_at"


def _stamp_use(_dbapi_conn: object, record: ConnectionPoolEntry) -> None:
    record.info[_USED] = time.monotonic()


def _ping_if_idle(
    engine: Engine,
) -> Callable[[Any, ConnectionPoolEntry, PoolProxiedConnection], None]:  # Any: a DBAPI connection
    """A pool ``checkout`` listener: ping a connection that sat idle, not a busy one.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a BEGIN and a
    SELECT 1 (psycopg opens a transaction for it), two round trips before
    each request's own statements — at a fleet's request rate the most
    expensive part of a one-statement request (bench/bench_leases.py). A
    connection returned less than :data:`PING_IDLE_SECONDS` ago was just
    working; one idle longer (a quiet spell, a database restart in between)
    is pinged, and a dead one is discarded and replaced before any request
    sees it (``DisconnectionError``: the pool retries the checkout). A
    connection broken while in use still fails its request, and SQLAlchemy
    then invalidates every connection of the pool opened before it.
    """
    dialect = engine.dialect

    def checkout(
        dbapi_conn: Any,  # Any: a DBAPI connection
        record: ConnectionPoolEntry,
        _proxy: PoolProxiedConnection,
    ) -> None:
        used = record.info.get(_USED)
        if used is not None and time.monotonic() - used < PING_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_conn)
            dbapi_conn.rollback()
        except Exception as e:
            if dialect.is_disconnect(e, dbapi_conn, None):  # type: ignore[arg-type]
                raise DisconnectionError(f"pooled connection is gone: {e}") from e
            raise

    return checkout


POOL_SIZE = 40  # connections kept open to PostgreSQL per process (settings: db_pool_size)
POOL_OVERFLOW = 0  # more, opened under a burst and closed when returned (db_pool_overflow)


def make_engine(
    url: str, *, pool_size: int = POOL_SIZE, max_overflow: int = POOL_OVERFLOW
) -> Engine:
    """An engine for ``url``; creates the SQLite file's directory when missing.

    ``pool_size`` and ``max_overflow`` size the PostgreSQL pool of this process
    (docs/deploy.md "Connection pools"); SQLite ignores them."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # The request thread pool runs up to 40 handlers at once (anyio's default):
    # with SQLAlchemy's default 5 + 10 overflow, connections past the fifth were
    # closed on return and opened again under load (a PostgreSQL backend start
    # per request, bench/bench_leases.py); with 20 + 20, past the 20th (32
    # lessees: a backend start every 5 leases, 360 per 2,000, most of
    # PostgreSQL's CPU). So all 40 are kept once opened (opened as needed). A
    # connection idle for a while is pinged before use (_ping_if_idle), so a
    # restarted database does not fail the first requests after it returns.
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    event.listen(engine, "checkout", _ping_if_idle(engine))
    event.listen(engine, "checkin", _stamp_use)
    return engine


def is_busy(error: OperationalError) -> bool:
    """Whether ``error`` is SQLite's "database is locked" (busy_timeout ran out)."""
    return isinstance(error.orig, sqlite3.OperationalError) and (
        "locked" in str(error.orig) or "busy" in str(error.orig)
    )


def writer(engine: Engine) -> Engine:
    """``engine`` whose transactions begin with the write lock on SQLite (same pool)."""
    return engine.execution_options(**{WRITE: True})


def single_statement(engine: Engine, *, write: bool) -> Engine:
    """``engine`` for a unit of work that is exactly one statement (same pool).

    On PostgreSQL: autocommit, the statement is its own transaction — no
    ``BEGIN`` and ``COMMIT`` round trips around it (psycopg sends each on its
    own), which on the node API's one-statement requests cost more than the
    statement. On SQLite: ``writer(engine)`` when ``write`` (the statement's
    write lock taken up front, as every write unit does), else ``engine``.
    Use it as ``with single_statement(e, write=True).begin() as conn: …``.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return writer(engine) if write else engine


def make_sessionmaker(engine: Engine, *, write: bool = True) -> sessionmaker[Session]:
    """Sessions on ``engine``; ``write`` (the default): each transaction is a write transaction.

    ``write=False`` only for sessions that never write, or that write without
    reading first (a blind UPDATE): on SQLite their reads do not wait for writers.
    """
    # expire_on_commit=False: responses are built from objects after commit.
    return sessionmaker(writer(engine) if write else engine, expire_on_commit=False)


def write_session(engine: Engine) -> Session:
    """A session whose transaction takes the write lock before its first read (SQLite).

    ``with write_session(engine) as s: …; s.commit()`` — for code that holds an
    engine rather than a sessionmaker (the CLI, the heartbeat flusher, tests).
    """
    return Session(writer(engine), expire_on_commit=False)
