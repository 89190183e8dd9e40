"""A new, empty database made at the head revision in one go, without Alembic.

Running the migration chain on an empty database imports Alembic (and Mako,
and Pygments through Mako: 0.1 s of CPU) and replays every revision,
SQLite's batch-mode table copies included (another 0.1 s), on the platform's
first start; and even at head, Alembic loaded every script to find there was
nothing to do. An empty database needs none of that history:
``Base.metadata.create_all`` makes the head schema (0.03 s), the seed rows
of revision 0001 are inserted, and the version table is stamped with
:data:`HEADS` exactly as Alembic would. A database at head is recognised by
reading the stamp (:func:`at_head`).

That this gives the same database as the chain is not assumed:
``tests/platform/test_fresh_schema.py`` builds one database each way, on
SQLite and on PostgreSQL, and compares their schemas (``pg_dump
--schema-only`` on PostgreSQL; every table's columns, keys, indexes and DDL on
SQLite), the seed rows and the stamp; and checks :data:`HEADS` against the
migration scripts, so a new revision cannot be forgotten here.

Two processes may start on the same new database at once (the demo creates
its token while the platform starts): the creation runs under a lock —
SQLite's ``BEGIN IMMEDIATE`` (one writer; the other waits ``busy_timeout``),
PostgreSQL's transaction-scoped advisory lock — and whoever comes second finds
the database at head and leaves it alone.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    select,
    text,
)

from powernode.platform.db import Base, NodeModuleCategory, NodeTemplate
from powernode.platform.db.session import writer

log = logging.getLogger(__name__)

# The head of every branch of migrations/versions (checked by the tests).
HEADS: tuple[str, ...] = ("0011_node_commits",)
# Alembic's version table as alembic.runtime.migration.MigrationContext defines it.
VERSION_TABLE = "alembic_version"
_version = Table(
    VERSION_TABLE,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)
# The rows revision 0001 seeds (its CATEGORIES and TEMPLATES; the test compares).
SEED_CATEGORIES = (
    ("system-base", "System base", 10),
    ("network-overlay", "Network overlay", 60),
    ("container-runtimes", "Container runtimes", 70),
    ("security-hardening", "Security hardening", 80),
    ("userland", "Userland", 90),
)
SEED_TEMPLATES = (
    ("base", "Minimal node: assign system-base and the modules it needs."),
    ("hardened", "Base plus security-hardening modules for exposed nodes."),
)
# pg_advisory_xact_lock key: "pnschema" in ASCII, any constant the platform alone uses.
_PG_LOCK_KEY = 0x706E736368656D61


def revisions(conn: Connection) -> tuple[str, ...] | None:
    """The stamped revisions, sorted; None when the database has no version table."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return tuple(sorted(conn.scalars(select(_version.c.version_num))))


def at_head(engine: Engine) -> bool:
    """True when the database is stamped with exactly :data:`HEADS`."""
    with engine.connect() as conn:
        return revisions(conn) == HEADS


def create_at_head(engine: Engine, *, now: datetime) -> bool:
    """Make the head schema, seed it and stamp it, if the database is empty.

    True when the database is at head afterwards: made here, or found so
    (another process was first). False when it holds anything else (an older
    stamp, tables without one), which is the migration chain's to handle
    (``migrate.upgrade``) and is left untouched.
    """
    with writer(engine).connect() as conn:
        _lock(conn)
        stamped = revisions(conn)
        if stamped is not None or inspect(conn).get_table_names():
            conn.rollback()
            return stamped == HEADS
        Base.metadata.create_all(conn)
        _seed(conn, now)
        _version.create(conn)
        conn.execute(_version.insert(), [{"version_num": h} for h in HEADS])
        conn.commit()
    log.info("created the schema at %s", ",".join(HEADS))
    return True


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        # The engine's begin hook (db/session.py) opens this transaction with
        # BEGIN IMMEDIATE for a writer connection: the write lock is taken here.
        conn.exec_driver_sql("SELECT 1")
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _seed(conn: Connection, now: datetime) -> None:
    conn.execute(
        Base.metadata.tables[NodeModuleCategory.__tablename__].insert(),
        [
            {"id": str(uuid.uuid4()), "slug": slug, "name": name, "position": position}
            for slug, name, position in SEED_CATEGORIES
        ],
    )
    conn.execute(
        Base.metadata.tables[NodeTemplate.__tablename__].insert(),
        [
            {
                "id": str(uuid.uuid4()),
                "account": "default",
                "name": name,
                "description": description,
                "created_at": now,
            }
            for name, description in SEED_TEMPLATES
        ],
    )
