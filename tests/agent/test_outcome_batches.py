"""The agent reports its buffered outcomes in batches (POST /tasks/outcomes), against the fake."""

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


def _leased(platform: FakePlatform, n: int) -> list[str]:
    ids = [platform.add_task(INSTANCE, "agent.noop") for _ in range(n)]
    for task_id in ids:
        platform.tasks[task_id].state = "leased"
        platform.tasks[task_id].attempt = 1
    return ids


def test_buffered_outcomes_go_in_batches_of_100_each_recorded_once(
    tmp_path: Path, platform: FakePlatform
) -> None:
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    ids = _leased(platform, 250)
    for i, task_id in enumerate(ids):
        if i % 2:
            rt.spool.record_outcome(task_id, "fail", {"error": "e", "retryable": False}, NOW)
        else:
            rt.spool.record_outcome(task_id, "ack", {"result": {"i": i}}, NOW)
    rt.report_outcomes()
    assert platform.outcome_posts == [100, 100, 50]
    assert rt.spool.outcome_depth() == 0
    for i, task_id in enumerate(ids):
        (recorded,) = platform.tasks[task_id].outcomes
        assert recorded == (
            ("fail", {"error": "e", "retryable": False}) if i % 2 else ("ack", {"result": {"i": i}})
        )


def test_a_refused_outcome_is_dropped_alone(tmp_path: Path, platform: FakePlatform) -> None:
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    good = _leased(platform, 2)
    rt.spool.record_outcome("not-a-task", "ack", {"result": {}}, NOW)
    for task_id in good:
        rt.spool.record_outcome(task_id, "ack", {"result": {}}, NOW)
    rt.report_outcomes()
    assert platform.outcome_posts == [3]
    assert rt.spool.outcome_depth() == 0
    assert all(platform.tasks[t].state == "done" for t in good)


def test_a_platform_without_the_batch_endpoint_gets_one_request_each(
    tmp_path: Path, platform: FakePlatform
) -> None:
    platform.batch_outcomes = False
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    ids = _leased(platform, 3)
    for task_id in ids:
        rt.spool.record_outcome(task_id, "ack", {"result": {}}, NOW)
    rt.report_outcomes()
    assert platform.outcome_posts == []
    assert rt.spool.outcome_depth() == 0
    assert all(platform.tasks[t].outcomes == [("ack", {"result": {}})] for t in ids)


def test_outcomes_stay_buffered_while_the_platform_is_down(
    tmp_path: Path, platform: FakePlatform
) -> None:
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    ids = _leased(platform, 5)
    for task_id in ids:
        rt.spool.record_outcome(task_id, "ack", {"result": {}}, NOW)
    platform.fail_5xx = 100
    assert not rt.beat()
    assert rt.spool.outcome_depth() == 5
    assert all(platform.tasks[t].outcomes == [] for t in ids)
    platform.fail_5xx = 0
    rt.report_outcomes()
    assert rt.spool.outcome_depth() == 0
    assert all(len(platform.tasks[t].outcomes) == 1 for t in ids)
