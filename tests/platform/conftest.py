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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from powernode.platform.app import create_app
from powernode.platform.db import Base
from powernode.platform.db.migrate import upgrade
from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.providers import RecordingProvider
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings
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


@dataclass
class Platform:
    """A running app on a fresh database, with one token per role."""

    app: FastAPI
    portal: BlockingPortal
    client: AsyncClient
    engine: Engine
    provider: RecordingProvider
    tokens: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def call(self, method: str, path: str, role: str = "admin", **kw: Any) -> Response:
        return self.raw(method, API + path, headers=self.headers(role), **kw)

    def raw(self, method: str, url: str, **kw: Any) -> Response:
        """A request through httpx's ASGI transport, from synchronous test code."""

        async def go() -> Response:
            return await self.client.request(method, url, **kw)

        return self.portal.call(go)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table: equal before and after means nothing changed."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self.engine.connect() as c:
            for name, table in sorted(Base.metadata.tables.items()):
                rows = c.execute(select(table)).all()
                out[name] = sorted(tuple(str(v) for v in r) for r in rows)
        return out

    def count(self, table: str) -> int:
        return len(self.snapshot()[table])


API = "/api/v1/system"
ROLES = {
    "read": ["read"],
    "write": ["write"],
    "admin": ["write", "promote-live"],
    "approver": ["promote-live"],
}


@pytest.fixture
def platform(db_url: str, tmp_path: Path, fixed_now: datetime) -> Iterator[Platform]:
    # The template database is migrated already; test_migrations covers migrate-on-start.
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, migrate_on_start=False)
    provider = RecordingProvider()
    ticks = itertools.count()
    # Each reading one second later, so "newest first" has one answer.
    app = create_app(
        settings, provider=provider, clock=lambda: fixed_now + timedelta(seconds=next(ticks))
    )
    engine = make_engine(db_url)
    tokens: dict[str, str] = {}
    with Session(engine) as session:
        ctx = Ctx(session, Actor("test-setup", None, frozenset(SCOPES)), fixed_now)
        for role, scopes in ROLES.items():
            tokens[role] = create_token(ctx, role, scopes)[1]
        session.commit()
    with start_blocking_portal() as portal:
        client = AsyncClient(transport=ASGITransport(app=app), base_url="http://platform.test")
        try:
            yield Platform(app, portal, client, engine, provider, tokens)
        finally:
            portal.call(client.aclose)
    app.state.platform.engine.dispose()
    engine.dispose()
