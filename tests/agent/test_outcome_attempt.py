"""Each outcome names its lease's attempt, so a stale one cannot count (fake platform)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from powernode.agent.lifecycle import ManualClock
from tests.agent.fakeplatform import FakePlatform, enrolled_agent, make_runtime

NOW = datetime(2025, 1, 1, tzinfo=UTC)
INSTANCE = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform(ManualClock(NOW))


@pytest.mark.parametrize("batched", [True, False])
def test_outcomes_carry_the_lease_attempt(
    tmp_path: Path, platform: FakePlatform, batched: bool
) -> None:
    platform.batch_outcomes = batched
    config = enrolled_agent(tmp_path, platform)
    ok = platform.add_task(INSTANCE, "agent.noop")
    bad = platform.add_task(INSTANCE, "thing.unknown")
    platform.tasks[ok].attempt = 2  # leased once before: this lease is attempt 3
    make_runtime(config, platform).beat()
    assert sorted(a for a in platform.attempts_reported if a is not None) == [1, 3]
    assert None not in platform.attempts_reported
    assert (platform.tasks[ok].state, platform.tasks[bad].state) == ("done", "failed")


def test_a_buffered_outcome_of_an_older_attempt_is_refused_and_dropped(
    tmp_path: Path, platform: FakePlatform
) -> None:
    # Buffered before an outage; meanwhile the lease expired and the task went again.
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    task = platform.add_task(INSTANCE, "agent.noop")
    platform.tasks[task].state = "leased"
    platform.tasks[task].attempt = 2
    rt.spool.record_outcome(task, "ack", {"result": {}, "attempt": 1}, NOW)
    rt.report_outcomes()
    assert platform.tasks[task].state == "leased"
    assert platform.tasks[task].outcomes == []
    assert rt.spool.outcome_depth() == 0  # refused: not retried forever
