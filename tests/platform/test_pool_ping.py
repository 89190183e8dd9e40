"""PostgreSQL pool: a connection is pinged before use only after it sat idle
(db/session.py ``_ping_if_idle``), so a dead idle connection never fails a
request, and a busy one costs no extra round trips."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from powernode.platform.db import session as dbsession
from powernode.platform.db.session import make_engine
from tests.platform import pgcluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_server: str) -> str:
    return pgcluster.create_database(pg_server, f"pn_ping_{id(object())}")


def test_a_connection_is_pinged_when_new_or_idle_not_when_just_used(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    pings: list[object] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(dbapi_conn)
        return ping(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    try:
        for _ in range(3):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        assert len(pings) == 1  # the new connection only
        monkeypatch.setattr(dbsession, "PING_IDLE_SECONDS", 0.0)  # now everything is idle
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert len(pings) == 2
    finally:
        engine.dispose()


def test_a_dead_idle_connection_is_replaced_before_the_request_sees_it(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        # The server ends that backend while it sits in the pool (a restart, an
        # idle timeout): the next checkout, idle long enough, pings and replaces it.
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        monkeypatch.setattr(dbsession, "PING_IDLE_SECONDS", 0.0)
        with engine.connect() as conn:
            again = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert again != pid
    finally:
        engine.dispose()


def test_a_dead_connection_used_just_now_fails_once_then_the_pool_recovers(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        monkeypatch.setattr(dbsession, "PING_IDLE_SECONDS", 3600.0)
        with pytest.raises(DBAPIError) as failed, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert failed.value.connection_invalidated
        with engine.connect() as conn:  # SQLAlchemy invalidated it: a new connection
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()
