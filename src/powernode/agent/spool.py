"""The fleet-event buffer and unreported task outcomes, in SQLite on disk.

Seed 000 (``internal/fleetevent``): "Reliably delivers events even across
platform outages (event buffer persists across agent restarts)". Delivery is
at-least-once: an event gets its id (a UUID) when it is appended, it is
removed only after the platform accepted the batch that carried it, and the
platform stores each id once (docs/node-api.md: "idempotent by event id").
A crash between the platform's commit and our delete resends the batch; the
platform counts it under ``duplicates``.

Durability: WAL journal with ``synchronous=FULL``, so a committed append
survives power loss, not only a process crash (SQLite docs, "PRAGMA
synchronous": in WAL mode NORMAL may lose the last transactions on power
loss). Task outcomes are kept the same way until the platform took them, so
a task executed before a crash is reported, not executed again.

The buffer is bounded (``max_events``): when full, the oldest events are
dropped and counted; the runtime reports the count as a
``system.events.dropped`` event once there is room.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import typing
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from powernode.agent.certstore import rfc3339
from powernode.errors import ConfigError, DataError
from powernode.node import records
from powernode.node.fields import JSON

log = logging.getLogger(__name__)

SEVERITIES = ("debug", "info", "warning", "error", "critical")
_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")
MAX_KIND = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    task_id TEXT PRIMARY KEY,
    verb TEXT NOT NULL CHECK (verb IN ('ack', 'fail')),
    body TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    severity: str
    occurred_at: str
    payload: dict[str, JSON]

    def to_wire(self) -> records.Event:
        """The event as ``POST /node_api/events`` carries it (the platform checks the fields)."""
        return records.Event(
            id=self.id,
            kind=self.kind,
            severity=typing.cast(records.Severity, self.severity),
            occurred_at=self.occurred_at,
            payload=self.payload,
        )


@dataclass(frozen=True)
class Outcome:
    task_id: str
    verb: str  # "ack" or "fail"
    body: dict[str, JSON]  # the request body of /tasks/{id}/{verb}


class Spool:
    """One SQLite file; safe to share between threads of one process."""

    def __init__(
        self, path: Path, *, max_events: int = 100_000, max_payload_bytes: int = 64 << 10
    ) -> None:
        self.path = path
        self.max_events = max_events
        self.max_payload_bytes = max_payload_bytes
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ConfigError(
                f"{path}: cannot open the event buffer ({e}); if it is corrupt, move it aside "
                "(its unsent events are then lost) and restart the agent"
            ) from e
        if mode.lower() != "wal":
            raise ConfigError(f"{path}: SQLite refused WAL mode (got {mode}); use a local disk")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- events ------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        severity: str,
        payload: dict[str, JSON],
        occurred_at: datetime,
        event_id: str | None = None,
    ) -> str:
        """Store one event durably and return its id."""
        row = self._event_row(kind, severity, payload, occurred_at, event_id)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert_event(row)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return row[0]

    def _event_row(
        self,
        kind: str,
        severity: str,
        payload: dict[str, JSON],
        occurred_at: datetime,
        event_id: str | None,
    ) -> tuple[str, str, str, str, str]:
        """The checked row of one event: (id, kind, severity, occurred_at, payload JSON)."""
        if len(kind) > MAX_KIND or not _KIND.fullmatch(kind):
            raise DataError(f"event kind {kind!r}: use dotted lowercase words, e.g. task.completed")
        if severity not in SEVERITIES:
            raise DataError(f"event severity {severity!r}: use one of {', '.join(SEVERITIES)}")
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        if len(text) > self.max_payload_bytes:
            raise DataError(
                f"event {kind}: payload of {len(text)} bytes is over the "
                f"{self.max_payload_bytes}-byte limit (event_max_payload_bytes)"
            )
        return (event_id or str(uuid.uuid4()), kind, severity, rfc3339(occurred_at), text)

    def _insert_event(self, row: tuple[str, str, str, str, str]) -> None:
        """Insert inside the caller's write transaction, dropping the oldest when full."""
        (depth,) = self._db.execute("SELECT count(*) FROM events").fetchone()
        excess = depth - self.max_events + 1
        if excess > 0:
            self._db.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                (excess,),
            )
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('dropped', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                (excess,),
            )
            log.warning("event buffer full (%d): dropped the oldest %d", depth, excess)
        self._db.execute(
            "INSERT OR IGNORE INTO events(id, kind, severity, occurred_at, payload) "
            "VALUES (?, ?, ?, ?, ?)",
            row,
        )

    def peek(self, limit: int) -> list[Event]:
        """The oldest ``limit`` events, oldest first (they stay until :meth:`remove`)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, severity, occurred_at, payload FROM events ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def remove(self, ids: list[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")

    def depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM events").fetchone()
        return int(n)

    def take_dropped(self) -> int:
        """How many events overflow dropped since the last call (and reset the count)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
            self._db.execute("DELETE FROM meta WHERE key = 'dropped'")
            self._db.execute("COMMIT")
        return int(row[0]) if row else 0

    # -- task outcomes -----------------------------------------------------------------

    def record_outcome(
        self,
        task_id: str,
        verb: str,
        body: dict[str, JSON],
        now: datetime,
        event: tuple[str, str, dict[str, JSON]] | None = None,
    ) -> bool:
        """Keep an outcome until the platform took it, and its event, in one transaction.

        ``event`` is the (kind, severity, payload) the outcome becomes; it is
        stored with the outcome or not at all, so a crash leaves both or
        neither (issue 13, item 4: two commits lost 4 of 935 ``task.completed``
        events to SIGKILL). The first outcome recorded for a task wins: a task
        run again while its outcome waits adds neither outcome nor event.
        Returns whether this call recorded it.
        """
        row = None
        if event is not None:
            try:
                row = self._event_row(*event, now, None)
            except DataError as e:  # the outcome matters more than its event
                log.error("task %s: outcome kept without its event: %s", task_id, e)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outcomes(task_id, verb, body, recorded_at) "
                    "VALUES (?, ?, ?, ?)",
                    (task_id, verb, json.dumps(body, separators=(",", ":")), rfc3339(now)),
                )
                fresh = cur.rowcount == 1
                if fresh and row is not None:
                    self._insert_event(row)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return fresh

    def readopt_outcome(self, task_id: str, attempt: int) -> bool:
        """Make the buffered outcome of ``task_id`` answer lease ``attempt``; False if none.

        The platform takes an outcome only for the attempt it leased last
        (docs/node-api.md); a task offered again after it ran here is not
        run again, its outcome is reported for the new lease.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT body FROM outcomes WHERE task_id = ?", (task_id,)
                ).fetchone()
                if row is not None:
                    body = json.loads(row[0])
                    if "attempt" in body:
                        body["attempt"] = attempt
                        self._db.execute(
                            "UPDATE outcomes SET body = ? WHERE task_id = ?",
                            (json.dumps(body, separators=(",", ":")), task_id),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return row is not None

    def outcomes(self, limit: int = 1000) -> list[Outcome]:
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, verb, body FROM outcomes ORDER BY recorded_at, task_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [Outcome(r[0], r[1], json.loads(r[2])) for r in rows]

    def has_outcome(self, task_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM outcomes WHERE task_id = ?", (task_id,)
            ).fetchone()
        return row is not None

    def remove_outcome(self, task_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outcomes WHERE task_id = ?", (task_id,))

    def outcome_depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM outcomes").fetchone()
        return int(n)


def read_depths(path: Path) -> tuple[int, int] | None:
    """(events, outcomes) waiting in the buffer at ``path``, read-only; None if there is none."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (events,) = db.execute("SELECT count(*) FROM events").fetchone()
            (outcomes,) = db.execute("SELECT count(*) FROM outcomes").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path}: cannot read the event buffer: {e}") from e
    return int(events), int(outcomes)
