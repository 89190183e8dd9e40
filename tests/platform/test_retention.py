"""Retention (services/retention.py) on SQLite and PostgreSQL: old rows go, new rows stay,
batches are short transactions a writer gets between, bad settings are refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from powernode.errors import ConfigError
from powernode.platform.db import AuditLogEntry, FleetEvent, WebhookDelivery
from powernode.platform.db.session import make_engine, write_session
from powernode.platform.services import retention
from powernode.platform.services.retention import RetentionPolicy, Rule
from powernode.platform.settings import load_settings
from powernode.platform.worker import IngestWorker

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    yield e
    e.dispose()


def _add(engine: Engine, table: str, ages_days: list[float], tag: str = "") -> None:
    with Session(engine) as s:
        for i, age in enumerate(ages_days):
            at = NOW - timedelta(days=age)
            if table == "fleet_events":
                s.add(FleetEvent(kind=f"test{tag}", occurred_at=at, payload={"i": i}))
            elif table == "audit_log":
                s.add(AuditLogEntry(at=at, actor="t", action=f"a{tag}", target_type="x"))
            else:
                s.add(
                    WebhookDelivery(
                        provider="gitea",
                        delivery_id=f"d{tag}-{i}",
                        event="push",
                        ref="refs/tags/v1",
                        received_at=at,
                        body_sha256=f"{tag}{i:063d}"[-64:],
                    )
                )
        s.commit()


def _ages(engine: Engine, table: str) -> list[float]:
    _model, at = retention.TABLES[table]
    with Session(engine) as s:
        return sorted((NOW - t).total_seconds() / 86400 for t in s.scalars(select(at)))


@pytest.mark.parametrize("table", sorted(retention.TABLES))
def test_old_rows_go_new_rows_stay(engine: Engine, table: str) -> None:
    _add(engine, table, [40.0 + i for i in range(25)] + [1.0, 5.0, 29.0])
    batches: list[int] = []
    gone = retention.purge_table(
        engine,
        table,
        Rule(max_age=timedelta(days=30)),
        NOW,
        batch_size=10,
        max_batches=100,
        on_batch=lambda _t, n: batches.append(n),
    )
    assert gone == 25
    assert batches == [10, 10, 5]  # each batch its own transaction, the last one short
    assert _ages(engine, table) == [1.0, 5.0, 29.0]
    # Nothing old left: a second run deletes nothing.
    assert (
        retention.purge_table(
            engine, table, Rule(timedelta(days=30)), NOW, batch_size=10, max_batches=5
        )
        == 0
    )


def test_count_cap_keeps_the_newest(engine: Engine) -> None:
    # Ties on the time column are split by id: exactly max_rows stay.
    _add(engine, "fleet_events", [3.0] * 6 + [2.0, 1.0, 0.5])
    gone = retention.purge_table(
        engine, "fleet_events", Rule(max_rows=5), NOW, batch_size=2, max_batches=10
    )
    assert gone == 4
    assert _ages(engine, "fleet_events") == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_max_batches_bounds_one_round(engine: Engine) -> None:
    _add(engine, "audit_log", [100.0] * 30)
    rule = Rule(max_age=timedelta(days=1))
    assert retention.purge_table(engine, "audit_log", rule, NOW, batch_size=10, max_batches=2) == 20
    assert len(_ages(engine, "audit_log")) == 10  # the rest waits for the next round


def _write_nowait(engine: Engine, url: str) -> None:
    """A write that fails at once (no waiting) if another transaction holds the table."""
    with write_session(engine) as s:
        if url.startswith("sqlite"):
            pass  # write_session began with BEGIN IMMEDIATE: busy_timeout is 0 (below)
        else:
            # SHARE conflicts with the ROW EXCLUSIVE lock an open DELETE holds.
            s.execute(text("LOCK TABLE fleet_events IN SHARE MODE NOWAIT"))
        s.add(FleetEvent(kind="writer", occurred_at=NOW, payload={}))
        s.commit()


def test_a_writer_gets_in_between_every_batch(engine: Engine, db_url: str) -> None:
    """Between two batches no transaction is open: a no-wait writer always succeeds."""
    _add(engine, "fleet_events", [50.0] * 12)
    nowait = make_engine(db_url)
    if db_url.startswith("sqlite"):
        from sqlalchemy import event

        @event.listens_for(nowait, "connect")
        def _no_busy_wait(conn: object, _rec: object) -> None:
            conn.execute("PRAGMA busy_timeout=0")  # type: ignore[attr-defined]

    written: list[int] = []

    def between(_table: str, _n: int) -> None:
        t = threading.Thread(target=lambda: (_write_nowait(nowait, db_url), written.append(1)))
        t.start()
        t.join(timeout=60)
        assert not t.is_alive()

    try:
        gone = retention.purge_table(
            engine,
            "fleet_events",
            Rule(max_age=timedelta(days=30)),
            NOW,
            batch_size=5,
            max_batches=10,
            on_batch=between,
        )
    finally:
        nowait.dispose()
    assert gone == 12
    assert written == [1, 1, 1]  # one write between each batch, none refused
    with Session(engine) as s:
        assert s.scalar(select(func.count()).where(FleetEvent.kind == "writer")) == 3


def test_a_concurrent_writer_is_not_refused(engine: Engine) -> None:
    """Events written while a purge runs all land and all stay (they are new)."""
    _add(engine, "fleet_events", [60.0] * 300)
    stop = threading.Event()
    errors: list[BaseException] = []
    wrote = 0

    def writer() -> None:
        nonlocal wrote
        try:
            for i in range(2000):  # bounded
                if stop.is_set():
                    return
                with write_session(engine) as s:
                    s.add(FleetEvent(kind="live", occurred_at=NOW, payload={"i": i}))
                    s.commit()
                wrote += 1
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        gone = retention.purge_table(
            engine,
            "fleet_events",
            Rule(max_age=timedelta(days=30)),
            NOW,
            batch_size=20,
            max_batches=100,
        )
    finally:
        stop.set()
        t.join(timeout=120)
    assert not errors
    assert gone == 300
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(FleetEvent)) == wrote


def test_the_worker_round_applies_the_settings(engine: Engine, tmp_path: object) -> None:
    _add(engine, "fleet_events", [45.0, 10.0])
    _add(engine, "audit_log", [400.0, 10.0])
    _add(engine, "webhook_deliveries", [45.0, 10.0])
    settings = load_settings(env={})  # the defaults: 30 days, 365 days, 30 days
    worker = IngestWorker(
        sessionmaker(engine),
        None,
        clock=lambda: NOW,
        retention=RetentionPolicy.from_settings(settings),
    )
    report = worker.run_once()
    assert report.purged == 3
    for table in retention.TABLES:
        assert _ages(engine, table) == [10.0]


def test_zero_keeps_everything(engine: Engine) -> None:
    _add(engine, "fleet_events", [5000.0])
    settings = load_settings(env={"POWERNODE_RETENTION_EVENTS_DAYS": "0"})
    policy = RetentionPolicy.from_settings(settings)
    assert retention.purge(engine, policy, NOW).get("fleet_events", 0) == 0
    assert _ages(engine, "fleet_events") == [5000.0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POWERNODE_RETENTION_BATCH_SIZE": "5"}, "retention_batch_size: Input should be greater"),
        ({"POWERNODE_RETENTION_EVENTS_DAYS": "-1"}, "retention_events_days: Input should be"),
        ({"POWERNODE_RETENTION_AUDIT_DAYS": "0.5"}, "keep rows at least 1 day, or 0"),
        ({"POWERNODE_RETENTION_DELIVERIES_MAX_ROWS": "10"}, "keep at least 1,000 rows, or 0"),
        ({"POWERNODE_RETENTION_EVENTS_DAYS": "soon"}, "retention_events_days: Input should be"),
        ({"POWERNODE_DB_POOL_SIZE": "0"}, "db_pool_size: Input should be greater"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env=env)
    assert message in str(e.value)


def test_unknown_table_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="no retention for table 'nodes'"):
        retention.purge_table(engine, "nodes", Rule(max_rows=1), NOW, batch_size=10, max_batches=1)
