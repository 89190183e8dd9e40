"""Per-instance rate limits of the node API, held in the database for every process.

A token bucket per instance and kind of request (``node_rate_buckets``):
``burst`` tokens at most, refilled at ``rate`` per second, a request costs
its count (one per event). The charge is one statement, an upsert whose
``DO UPDATE … WHERE`` refills and takes in SQL only when the level covers
the cost (the arithmetic of :func:`take`), under the row's lock in the
request's write transaction (on SQLite the unit's ``BEGIN IMMEDIATE``), so
two platform processes share one budget per instance: a node cannot double
its rate by spreading requests over processes. A refused request takes
nothing and raises :class:`RateLimitedError` (429 with ``Retry-After``); only
then is the row read again, to say how long to wait. Rotation has its own
limit, a minimum interval checked on the instance row under the lock rotation
takes anyway (services/nodeapi/enroll.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from powernode.platform.db import NodeRateBucket
from powernode.platform.db.base import UTCDateTime
from powernode.platform.problems import RateLimitedError


@dataclass(frozen=True)
class Taken:
    """The bucket after a request: ``left`` tokens, or refused with ``retry_after`` seconds."""

    left: float
    retry_after: float | None = None


def take(
    tokens: float, since: datetime, now: datetime, *, cost: float, rate: float, burst: float
) -> Taken:
    """Refill a bucket that held ``tokens`` at ``since`` up to ``now``, then take ``cost``.

    Pure. A clock that moved backwards refills nothing. ``cost`` above
    ``burst`` can never be served: the caller bounds its requests below it.
    """
    elapsed = max((now - since).total_seconds(), 0.0)
    level = min(burst, tokens + elapsed * rate)
    if cost <= level:
        return Taken(level - cost)
    return Taken(level, (cost - level) / rate)


def charge(
    session: Session,
    instance_id: str,
    bucket: str,
    cost: float,
    *,
    rate: float,
    burst: float,
    now: datetime,
    what: str,
) -> None:
    """Take ``cost`` tokens of the instance's ``bucket`` or raise RateLimitedError; no commit.

    ``rate`` zero or below: no limit. ``what`` names the request in the refusal.
    """
    if rate <= 0:
        return
    if cost <= burst:
        params = {
            "iid": instance_id,
            "bucket": bucket,
            "cost": float(cost),
            "rate": float(rate),
            "burst": float(burst),
            "now": now,
        }
        dialect = session.get_bind().dialect.name
        if session.execute(_charge_statement(dialect), params).first() is not None:
            return
    # Refused (or a cost no bucket can ever hold): say how long to wait. The
    # read-check-write below takes the row's lock, as the upsert would have.
    _charge_locked(session, instance_id, bucket, cost, rate=rate, burst=burst, now=now, what=what)


# Seconds from the row's updated_at to :now, exactly (no float day counts): on
# SQLite the timestamps are 'YYYY-MM-DD HH:MM:SS.ffffff' text (UTCDateTime).
_ELAPSED = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM (:now - b.updated_at)) AS DOUBLE PRECISION)",
    "sqlite": "((strftime('%s', :now) - strftime('%s', b.updated_at)) + "
    "(CAST(substr(:now, 21, 6) AS INTEGER) - CAST(substr(b.updated_at, 21, 6) AS INTEGER))"
    " / 1000000.0)",
}
_LEAST = {"postgresql": ("LEAST", "GREATEST"), "sqlite": ("MIN", "MAX")}


@functools.cache
def _charge_statement(dialect: str) -> TextClause:
    """The charge as one upsert (built once per dialect): a new bucket starts full
    and pays ``cost`` at once; an existing one is refilled up to ``burst`` and
    pays only when that level covers ``cost`` (no row returned: refused, nothing
    changed) — :func:`take` in SQL, checked and written under the row's lock."""
    least, greatest = _LEAST[dialect]
    level = f"{least}(:burst, b.tokens + {greatest}({_ELAPSED[dialect]}, 0) * :rate)"
    # Only this module's constants are formatted in; every value is a bound parameter.
    sql = (
        "INSERT INTO node_rate_buckets AS b (instance_id, bucket, tokens, updated_at) "  # noqa: S608
        "VALUES (:iid, :bucket, :burst - :cost, :now) "
        "ON CONFLICT (instance_id, bucket) DO UPDATE "
        f"SET tokens = {level} - :cost, updated_at = {greatest}(:now, b.updated_at) "
        f"WHERE {level} >= :cost "
        "RETURNING tokens"
    )
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime()))


def _charge_locked(
    session: Session,
    instance_id: str,
    bucket: str,
    cost: float,
    *,
    rate: float,
    burst: float,
    now: datetime,
    what: str,
) -> None:
    """:func:`charge` as a locked read-check-write of the row (the refusal's path)."""
    key = (instance_id, bucket)
    row = session.get(NodeRateBucket, key, with_for_update=True)
    if row is None:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(
            dialect.insert(NodeRateBucket)
            .values(instance_id=instance_id, bucket=bucket, tokens=burst, updated_at=now)
            .on_conflict_do_nothing(index_elements=["instance_id", "bucket"])
        )
        row = session.get(NodeRateBucket, key, with_for_update=True, populate_existing=True)
        assert row is not None  # inserted above, or by a concurrent request
    taken = take(row.tokens, row.updated_at, now, cost=cost, rate=rate, burst=burst)
    if taken.retry_after is not None:
        wait = max(1, math.ceil(taken.retry_after))
        raise RateLimitedError(
            f"instance {instance_id} is over its limit for {what}: {rate:g}/s with bursts of "
            f"{burst:g} (this request: {cost:g}); nothing was stored, retry after {wait} s",
            retry_after=wait,
        )
    row.tokens = taken.left
    row.updated_at = max(now, row.updated_at)
