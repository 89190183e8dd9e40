"""Fixtures: the same tests on SQLite and on PostgreSQL (marker ``postgres``).

Each backend is migrated once per session into a template; every test gets a
fresh copy (a file copy for SQLite, ``CREATE DATABASE … TEMPLATE`` for
PostgreSQL), so tests can count rows without seeing each other's.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from powernode.platform.db.migrate import upgrade
from powernode.platform.db.session import make_engine
from tests.conftest import IN_CI
from tests.platform import pgcluster

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    url = os.environ.get("POWERNODE_TEST_POSTGRES_URL")
    if url:
        yield url.rstrip("/")
        return
    bindir = pgcluster.find_bindir()
    if bindir is None:
        reason = "PostgreSQL is not installed (scripts/install-system-deps.sh installs it)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with pgcluster.temp_cluster(bindir) as server:
        yield server


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "platform.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> str:
    name = f"pn_template_{os.getpid()}"
    url = pgcluster.create_database(pg_server, name)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, seeded, empty-of-user-data database of each kind."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "platform.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    server: str = request.getfixturevalue("pg_server")
    tpl: str = request.getfixturevalue("pg_template")
    return pgcluster.create_database(server, f"pn_{os.getpid()}_{next(_counter)}", tpl)


@pytest.fixture
def fixed_now() -> datetime:
    return datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables at all."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: str = request.getfixturevalue("pg_server")
    return pgcluster.create_database(server, f"pn_empty_{os.getpid()}_{next(_counter)}")
