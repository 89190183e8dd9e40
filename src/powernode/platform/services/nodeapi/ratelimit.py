"""Per-instance rate limits of the node API, held in the database for every process.

A token bucket per instance and kind of request (``node_rate_buckets``):
``burst`` tokens at most, refilled at ``rate`` per second, a request costs
its count (one per event). The row is read and written under its lock in the
request's write transaction (``FOR UPDATE``; on SQLite the unit's ``BEGIN
IMMEDIATE``), so two platform processes share one budget per instance: a
node cannot double its rate by spreading requests over processes. A refused
request takes nothing and raises :class:`RateLimitedError` (429 with
``Retry-After``). Rotation has its own limit, a minimum interval checked on
the instance row under the lock rotation takes anyway (services/nodeapi/enroll.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from powernode.platform.db import NodeRateBucket
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
