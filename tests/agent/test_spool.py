"""The on-disk event buffer: durability settings, order, ids, bounds, outcomes."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powernode.agent.spool import Spool, read_depths
from powernode.errors import ConfigError, DataError

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_wal_and_synchronous_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "events.db")
    mode = spool._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = spool._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)  # 2 = FULL


def test_events_survive_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    spool = Spool(path)
    ids = [spool.append("task.completed", "info", {"n": i}, NOW) for i in range(5)]
    spool.close()
    again = Spool(path)
    events = again.peek(10)
    assert [e.id for e in events] == ids
    assert [e.payload["n"] for e in events] == list(range(5))
    assert events[0].to_wire().to_json() == {
        "id": ids[0],
        "kind": "task.completed",
        "severity": "info",
        "occurred_at": "2025-01-01T00:00:00Z",
        "payload": {"n": 0},
    }


def test_remove_only_the_given_ids(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "events.db")
    ids = [spool.append("a.b", "info", {}, NOW) for _ in range(4)]
    spool.remove(ids[:2])
    assert [e.id for e in spool.peek(10)] == ids[2:]
    assert spool.depth() == 2


def test_same_id_appended_twice_is_stored_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "events.db")
    spool.append("a.b", "info", {"v": 1}, NOW, event_id="e1")
    spool.append("a.b", "info", {"v": 2}, NOW, event_id="e1")
    assert [(e.id, e.payload) for e in spool.peek(10)] == [("e1", {"v": 1})]


@pytest.mark.parametrize(
    ("kind", "severity", "payload", "message"),
    [
        ("Task", "info", {}, "event kind 'Task': use dotted lowercase words"),
        ("task", "info", {}, "event kind 'task'"),
        ("task.done", "fatal", {}, "event severity 'fatal': use one of debug, info"),
        ("task.done", "info", {"x": "y" * 300}, "over the 256-byte limit"),
    ],
    ids=["upper", "undotted", "severity", "too-big"],
)
def test_bad_events_refused_and_nothing_stored(
    tmp_path: Path, kind: str, severity: str, payload: dict[str, str], message: str
) -> None:
    spool = Spool(tmp_path / "events.db", max_payload_bytes=256)
    with pytest.raises(DataError, match=message):
        spool.append(kind, severity, payload, NOW)
    assert spool.depth() == 0


def test_overflow_drops_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "events.db", max_events=100)
    ids = [spool.append("a.b", "info", {"n": i}, NOW) for i in range(103)]
    assert spool.depth() == 100
    assert spool.peek(1)[0].id == ids[3]
    assert spool.take_dropped() == 3
    assert spool.take_dropped() == 0


def test_outcomes_first_recorded_wins_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    spool = Spool(path)
    spool.record_outcome("t1", "ack", {"result": {"ok": 1}}, NOW)
    spool.record_outcome("t1", "fail", {"error": "late", "retryable": True}, NOW)
    spool.close()
    again = Spool(path)
    [outcome] = again.outcomes()
    assert (outcome.task_id, outcome.verb, outcome.body) == ("t1", "ack", {"result": {"ok": 1}})
    assert again.has_outcome("t1")
    again.remove_outcome("t1")
    assert not again.has_outcome("t1")
    assert read_depths(path) == (0, 0)


def test_read_depths_read_only(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    assert read_depths(path) is None
    spool = Spool(path)
    spool.append("a.b", "info", {}, NOW)
    spool.record_outcome("t", "ack", {"result": {}}, NOW)
    assert read_depths(path) == (1, 1)


def test_corrupt_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match="move it aside"):
        Spool(path)
    assert path.read_bytes() == b"not a database" * 100


@settings(max_examples=30, deadline=None)
@given(
    payloads=st.lists(
        st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20), max_size=4),
        max_size=20,
    )
)
def test_payload_roundtrip(tmp_path_factory: pytest.TempPathFactory, payloads: list) -> None:
    spool = Spool(tmp_path_factory.mktemp("s") / "events.db")
    for p in payloads:
        spool.append("x.y", "debug", p, NOW)
    assert [e.payload for e in spool.peek(100)] == [json.loads(json.dumps(p)) for p in payloads]
    spool.close()


def test_other_connection_sees_committed_append(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    spool = Spool(path)
    spool.append("a.b", "info", {}, NOW)
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    other.close()
