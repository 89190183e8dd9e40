"""A new database made at head in one go (db/fresh.py) is the one the migration chain makes.

Each case builds two databases from empty, one by Alembic's chain
(``run_migrations``) and one by ``create_at_head``, and compares what a
program can see of them: on PostgreSQL ``pg_dump --schema-only``; on SQLite
every table's columns in order, its constraints, indexes (with their
predicates) and foreign keys, from ``sqlite_master`` and the PRAGMAs. The
seed rows and the version stamp are compared too.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

from powernode.platform.db import fresh
from powernode.platform.db.migrate import (
    current_revisions,
    head_revisions,
    run_migrations,
    upgrade,
)
from powernode.platform.db.session import make_engine
from tests.platform import pgcluster

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Pair:
    kind: str
    chain: str  # URL of an empty database for the migration chain
    fresh: str  # and one for create_at_head


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Pair:
    if request.param == "sqlite":
        return Pair(
            "sqlite", f"sqlite:///{tmp_path / 'chain.db'}", f"sqlite:///{tmp_path / 'fresh.db'}"
        )
    server: str = request.getfixturevalue("pg_server")
    name = f"pn_fresh_{os.getpid()}_{id(request)}"
    return Pair(
        "postgresql",
        pgcluster.create_database(server, name + "_chain"),
        pgcluster.create_database(server, name + "_fresh"),
    )


@pytest.fixture
def engines(pair: Pair) -> Iterator[tuple[Engine, Engine]]:
    chain, made = make_engine(pair.chain), make_engine(pair.fresh)
    try:
        yield chain, made
    finally:
        chain.dispose()
        made.dispose()


def _index_name(name: str) -> str:
    # SQLite numbers the indexes behind UNIQUE constraints in the order the CREATE TABLE
    # lists them; nothing can name them (DROP INDEX refuses), so their columns identify them.
    return "(automatic)" if name.startswith("sqlite_autoindex_") else name


def _index_columns(conn: sqlite3.Connection, index: str) -> list[tuple[object, ...]]:
    return conn.execute(f'PRAGMA index_xinfo("{index}")').fetchall()


def _sqlite_schema(path: str) -> dict[str, object]:
    """Per table: columns in order, the CREATE TABLE's constraints as a set, indexes, FKs."""
    conn = sqlite3.connect(path.removeprefix("sqlite:///"))
    try:
        out: dict[str, object] = {}
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        for kind, name, _table, sql in rows:
            if kind == "index":
                out[f"index {name}"] = re.sub(r"\s+", " ", sql or "(automatic)")
                continue
            body = re.sub(r"\s+", " ", sql).split("(", 1)[1].rsplit(")", 1)[0]
            parts = [p.strip() for p in re.split(r",(?![^()]*\))", body)]
            out[f"table {name}"] = {
                "columns": [p for p in parts if not p.startswith("CONSTRAINT")],
                "constraints": sorted(p for p in parts if p.startswith("CONSTRAINT")),
                "info": conn.execute(f'PRAGMA table_xinfo("{name}")').fetchall(),
                # The id of a foreign key is its position in the CREATE TABLE: not compared.
                "fks": sorted(fk[1:] for fk in conn.execute(f'PRAGMA foreign_key_list("{name}")')),
                "indexes": sorted(
                    (
                        _index_name(ix[1]),
                        *ix[2:],
                        conn.execute(f'PRAGMA index_xinfo("{ix[1]}")').fetchall(),
                    )
                    for ix in conn.execute(f'PRAGMA index_list("{name}")').fetchall()
                ),
            }
        return out
    finally:
        conn.close()


def _pg_schema(url: str) -> list[str]:
    bindir = pgcluster.find_bindir()
    pg_dump = str(bindir / "pg_dump") if bindir else "pg_dump"
    dump = subprocess.run(
        [pg_dump, "--schema-only", "--no-owner", "--no-privileges", "--dbname", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    # Comments, blank lines and pg_dump 17's random \restrict key say nothing of the schema.
    return [
        line
        for line in dump.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]


def _seed_rows(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as c:
        return {
            "categories": [
                tuple(r)
                for r in c.execute(
                    text("SELECT slug, name, position FROM node_module_categories ORDER BY slug")
                )
            ],
            "templates": [
                tuple(r)
                for r in c.execute(
                    text("SELECT account, name, description FROM node_templates ORDER BY name")
                )
            ],
            "counts": [
                (t, c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608
                for t in sorted(inspect(c).get_table_names())
            ],
        }


def test_create_at_head_makes_the_database_the_migration_chain_makes(
    pair: Pair, engines: tuple[Engine, Engine]
) -> None:
    chain, made = engines
    run_migrations(chain)
    assert fresh.create_at_head(made, now=NOW) is True
    if pair.kind == "sqlite":
        a, b = _sqlite_schema(pair.chain), _sqlite_schema(pair.fresh)
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key] == b[key], key
    else:
        assert _pg_schema(pair.chain) == _pg_schema(pair.fresh)
    assert _seed_rows(chain) == _seed_rows(made)
    assert current_revisions(chain) == current_revisions(made) == fresh.HEADS


def test_heads_name_the_newest_migration_scripts() -> None:
    # A new revision under migrations/versions must be named in fresh.HEADS too (and the
    # comparison above then shows whether the models still make the same schema).
    assert head_revisions() == fresh.HEADS


def test_upgrade_on_an_empty_database_does_not_run_the_chain(
    pair: Pair, engines: tuple[Engine, Engine]
) -> None:
    _, made = engines
    upgrade(made)
    assert current_revisions(made) == fresh.HEADS
    assert fresh.at_head(made)
    # Made in one go, and left alone at head: a second upgrade changes nothing.
    before = _seed_rows(made)
    upgrade(made)
    assert _seed_rows(made) == before


def test_create_at_head_leaves_an_older_database_to_the_chain(
    engines: tuple[Engine, Engine],
) -> None:
    chain, _ = engines
    run_migrations(chain, "0003_node_api")
    assert fresh.create_at_head(chain, now=NOW) is False  # stamped, but not at head
    assert current_revisions(chain) == ("0003_node_api",)
    upgrade(chain)  # the chain's last step
    assert current_revisions(chain) == fresh.HEADS


def test_create_at_head_leaves_tables_without_a_stamp_alone(
    engines: tuple[Engine, Engine],
) -> None:
    _, made = engines
    with made.begin() as c:
        c.execute(text("CREATE TABLE someone_elses (x INTEGER)"))
    assert fresh.create_at_head(made, now=NOW) is False
    assert inspect(made).get_table_names() == ["someone_elses"]


def test_concurrent_starts_on_one_empty_database_make_it_once(pair: Pair) -> None:
    # The demo's `token create` and `platform serve` meet on a new database: one creates
    # it, the other waits for the lock and finds it at head.
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def one() -> None:
        engine = make_engine(pair.fresh)
        try:
            start.wait()
            upgrade(engine)
        except BaseException as e:
            errors.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    engine = make_engine(pair.fresh)
    try:
        assert current_revisions(engine) == fresh.HEADS
        counts = dict(_seed_rows(engine)["counts"])  # type: ignore[arg-type]
        assert counts["node_module_categories"] == len(fresh.SEED_CATEGORIES)
        assert counts["node_templates"] == len(fresh.SEED_TEMPLATES)
    finally:
        engine.dispose()


def test_a_new_or_current_database_does_not_load_alembic(tmp_path: Path) -> None:
    # A new process, as `platform serve` is: making the database and finding it at head
    # again import nothing of Alembic (nor Mako, nor Pygments); an older one does.
    code = (
        "import sys\n"
        "from powernode.platform.db.migrate import upgrade, run_migrations\n"
        "from powernode.platform.db.session import make_engine\n"
        f"new = make_engine('sqlite:///{tmp_path / 'new.db'}')\n"
        "upgrade(new); upgrade(new)\n"
        "print(sorted(m for m in ('alembic', 'mako', 'pygments') if m in sys.modules))\n"
        f"old = make_engine('sqlite:///{tmp_path / 'old.db'}')\n"
        "run_migrations(old, '0003_node_api'); upgrade(old)\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == ["[]", "True"]


def test_the_wal_switch_is_retried_while_locked_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite may answer ``PRAGMA journal_mode=WAL`` on a new file "database is locked" at
    once while another connection switches it: retried, a bounded number of times; any
    other error is raised at once."""
    import sqlite3

    from powernode.platform.db import session

    monkeypatch.setattr(session, "WAL_PAUSE", 0.0)

    class Cursor:
        def __init__(self, errors: list[str]) -> None:
            self.errors, self.calls = errors, 0

        def execute(self, sql: str) -> None:
            self.calls += 1
            if self.errors:
                raise sqlite3.OperationalError(self.errors.pop(0))

    busy = Cursor(["database is locked"] * 3)
    session._wal(busy)  # type: ignore[arg-type]
    assert busy.calls == 4
    other = Cursor(["disk I/O error"])
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        session._wal(other)  # type: ignore[arg-type]
    assert other.calls == 1
    stuck = Cursor(["database is locked"] * (session.WAL_ATTEMPTS + 5))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        session._wal(stuck)  # type: ignore[arg-type]
    assert stuck.calls == session.WAL_ATTEMPTS
