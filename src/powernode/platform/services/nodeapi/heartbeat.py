"""Heartbeats: buffered in memory, the latest per instance, written in batches.

At a fleet's heartbeat rate a row UPDATE per request would make the database
the bottleneck (and each request wait for a commit). Instead the handler
only :meth:`HeartbeatBuffer.put`\\ s the report (a dict assignment under a
lock) and answers; a background task :meth:`~HeartbeatBuffer.flush`\\ es
every ``interval`` seconds: one executemany UPDATE of ``node_instances``
(``last_heartbeat_at``, ``running_module_digests``) and one upsert of
``node_agent_status``, in one transaction. The app's shutdown flushes once
more.

Trade-off (docs/node-api.md): ``last_heartbeat_at`` and the drift report lag
up to one interval (0.5 s), and a process killed with SIGKILL loses at most
that interval's reports — the next heartbeat (30 s later) says the same
again, so nothing durable is lost. A failed flush keeps its reports (newer
ones that arrived meanwhile win) and retries on the next tick. An UPDATE
never moves ``last_heartbeat_at`` backwards, so two API processes flushing
the same instance out of order keep the newest.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import anyio
from sqlalchemy import Engine, Table, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from powernode.platform.db import NodeAgentStatus, NodeInstance
from powernode.platform.db.session import write_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeartbeatReport:
    instance_id: str
    at: datetime
    boot_id: str = ""
    agent_version: str = ""
    running_module_digests: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, object] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    mem: dict[str, int] = field(default_factory=dict)


class HeartbeatBuffer:
    """The latest report per instance until the next flush. Thread-safe."""

    def __init__(self, engine: Engine, interval: float = 0.5) -> None:
        self.engine = engine
        self.interval = interval
        self._pending: dict[str, HeartbeatReport] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.flushed = 0  # reports written so far (tests, benchmarks, /metrics)
        self.received = 0  # reports accepted so far (/metrics)

    def put(self, report: HeartbeatReport) -> None:
        with self._lock:
            self._pending[report.instance_id] = report
            self.received += 1

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write what is buffered; returns how many reports were written."""
        with self._flush_lock:  # the background task and shutdown never write at once
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                written = self._write(list(batch.values()))
            except Exception:
                with self._lock:
                    for iid, report in batch.items():
                        # Keep the failed batch unless a newer report came in meanwhile.
                        self._pending.setdefault(iid, report)
                log.exception("heartbeat flush of %d report(s) failed; retrying", len(batch))
                raise
            self.flushed += written
            return written

    def _write(self, reports: list[HeartbeatReport]) -> int:
        # A write transaction from the first read (BEGIN IMMEDIATE on SQLite): a
        # deferred one that reads, then writes, fails at once if another writer
        # committed in between (SQLITE_BUSY_SNAPSHOT), busy_timeout or not.
        with write_session(self.engine) as session, session.begin():
            # An instance deleted since its certificate was issued: skip it (the
            # status upsert would break its foreign key and fail the batch).
            alive = set(
                session.scalars(
                    select(NodeInstance.id).where(
                        NodeInstance.id.in_([r.instance_id for r in reports])
                    )
                )
            )
            reports = [r for r in reports if r.instance_id in alive]
            if not reports:
                return 0
            t = cast(Table, NodeInstance.__table__)
            session.execute(
                update(t)
                .where(
                    t.c.id == bindparam("b_id"),
                    or_(
                        t.c.last_heartbeat_at.is_(None),
                        t.c.last_heartbeat_at <= bindparam("b_at"),
                    ),
                )
                .values(
                    last_heartbeat_at=bindparam("b_at"),
                    running_module_digests=bindparam("b_digests"),
                ),
                [
                    {"b_id": r.instance_id, "b_at": r.at, "b_digests": r.running_module_digests}
                    for r in reports
                ],
            )
            rows = [
                {
                    "instance_id": r.instance_id,
                    "boot_id": r.boot_id,
                    "agent_version": r.agent_version,
                    "mounts": r.mounts,
                    "load": r.load,
                    "mem": r.mem,
                    "reported_at": r.at,
                }
                for r in reports
            ]
            dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(NodeAgentStatus)
            cols = ("boot_id", "agent_version", "mounts", "load", "mem", "reported_at")
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["instance_id"],
                    set_={c: stmt.excluded[c] for c in cols},
                    where=NodeAgentStatus.reported_at <= stmt.excluded.reported_at,
                ),
                rows,
            )
        return len(reports)

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled (the app's lifespan task)."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await anyio.to_thread.run_sync(self.flush)
            except Exception:  # noqa: S112 - logged in flush; the loop must go on
                continue
