"""The rate bucket's one-statement charge (an upsert refilling and taking in SQL)
agrees with :func:`ratelimit.take` on both databases, to the microsecond."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from powernode.platform.db import NodeRateBucket
from powernode.platform.problems import RateLimitedError
from powernode.platform.services.nodeapi import ratelimit
from tests.platform.nodeapi.conftest import NodePlatform

NOW = datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
RATE, BURST = 2.0, 10.0


@pytest.mark.parametrize(
    ("tokens", "elapsed", "cost"),
    [
        pytest.param(None, 0.0, 3.0, id="new-bucket-starts-full"),
        pytest.param(None, 0.0, 11.0, id="new-bucket-cost-over-burst-refused"),
        pytest.param(4.0, 0.5, 5.0, id="refilled-exactly-to-the-cost"),
        pytest.param(4.0, 0.499999, 5.0, id="a-microsecond-short-refused"),
        pytest.param(0.0, 2.000001, 4.0, id="microseconds-refill"),
        pytest.param(0.0, 100.0, 10.0, id="refill-capped-at-burst"),
        pytest.param(9.0, 100.0, 10.5, id="over-burst-refused"),
        pytest.param(5.0, -30.0, 5.0, id="clock-backwards-refills-nothing"),
        pytest.param(5.0, -30.0, 5.5, id="clock-backwards-refused"),
    ],
)
def test_charge_agrees_with_take(
    node_platform: NodePlatform, tokens: float | None, elapsed: float, cost: float
) -> None:
    p = node_platform
    iid = p.instance()
    since = NOW - timedelta(seconds=elapsed)
    with Session(p.engine) as s:
        if tokens is not None:
            s.add(NodeRateBucket(instance_id=iid, bucket="events", tokens=tokens, updated_at=since))
        s.commit()
    expected = ratelimit.take(
        BURST if tokens is None else tokens,
        NOW if tokens is None else since,
        NOW,
        cost=cost,
        rate=RATE,
        burst=BURST,
    )
    with Session(p.engine) as s:
        kw = {"rate": RATE, "burst": BURST, "now": NOW, "what": "events"}
        if expected.retry_after is None:
            ratelimit.charge(s, iid, "events", cost, **kw)  # type: ignore[arg-type]
            s.commit()
        else:
            with pytest.raises(RateLimitedError) as refused:
                ratelimit.charge(s, iid, "events", cost, **kw)  # type: ignore[arg-type]
            assert refused.value.retry_after == max(1, math.ceil(expected.retry_after))
            s.rollback()
    with Session(p.engine) as s:
        row = s.get(NodeRateBucket, (iid, "events"))
        if expected.retry_after is not None:  # refused: the bucket is as it was
            before = (tokens, since) if tokens is not None else None
            assert ((row.tokens, row.updated_at) if row is not None else None) == before
            return
        assert row is not None
        assert row.tokens == pytest.approx(expected.left, abs=1e-9)
        assert row.updated_at == max(NOW, since)
