"""One database read for the live identities of every node request waiting for one.

Every node request reads its instance's row (identity.py). Heartbeats come
by the thousand per second, and a read each — a hop to the thread pool, a
pooled connection, a round trip — cost about twice the CPU of the rest of a
heartbeat. So requests in the event loop queue their instance id here; one
reader task at a time takes everything queued, reads it with one
``SELECT … WHERE id IN (…)`` in a worker thread and answers each waiter.

Freshness is what it was with one read per request: a request is answered
by a read that *began after the request was queued* — requests arriving
while a read is under way wait for the next one — so a revocation committed
before a request arrived is always seen by it.
"""

from __future__ import annotations

import asyncio

import anyio
from sqlalchemy import Engine

from powernode.platform.db.session import single_statement
from powernode.platform.services.nodeapi.identity import LiveIdentity

MAX_BATCH = 500  # ids per SELECT; more waiting are read in the next round


_COLUMNS = "id, status, cert_serial, new_cert_serial"


def read_identities(engine: Engine, ids: list[str]) -> dict[str, LiveIdentity]:
    """The live identity of each instance in ``ids`` that exists (blocking).

    ``engine`` is best ``single_statement(engine, write=False)``: on
    PostgreSQL the SELECT then runs alone, without BEGIN and ROLLBACK. The
    SQL is written out for the driver (text columns in and out, nothing to
    convert): SQLAlchemy's statement compilation and caching per call cost
    more than the read (it is sent as it is, still one statement on
    ``engine``'s events).
    """
    if not ids:
        return {}
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            sql = f"SELECT {_COLUMNS} FROM node_instances WHERE id = ANY(%(ids)s)"  # noqa: S608
            result = conn.exec_driver_sql(sql, {"ids": ids})
        else:
            marks = ", ".join("?" * len(ids))
            sql = f"SELECT {_COLUMNS} FROM node_instances WHERE id IN ({marks})"  # noqa: S608
            result = conn.exec_driver_sql(sql, tuple(ids))
        rows = result.all()
    return {r.id: LiveIdentity(r.status, r.cert_serial, r.new_cert_serial) for r in rows}


class LiveIdentityReader:
    """Batches live-identity reads of concurrent requests (one event loop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = single_statement(engine, write=False)
        self._waiting: dict[str, list[asyncio.Future[LiveIdentity | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, instance_id: str) -> LiveIdentity | None:
        """The instance's live identity as a read begun after this call sees it."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[LiveIdentity | None] = loop.create_future()
        self._waiting.setdefault(instance_id, []).append(waiter)
        if self._reader is None:
            self._reader = loop.create_task(self._read_while_waited())
        return await waiter

    async def _read_while_waited(self) -> None:
        try:
            while self._waiting:
                ids = list(self._waiting)[:MAX_BATCH]
                batch = {i: self._waiting.pop(i) for i in ids}
                try:
                    found = await anyio.to_thread.run_sync(read_identities, self.engine, ids)
                except Exception as e:  # each waiter gets the error (a 500 of its own)
                    for waiters in batch.values():
                        for w in waiters:
                            if not w.done():
                                w.set_exception(e)
                    continue
                for instance_id, waiters in batch.items():
                    for w in waiters:
                        if not w.done():
                            w.set_result(found.get(instance_id))
        finally:
            self._reader = None
