"""The agent reports its buffered outcomes in batches (POST /tasks/outcomes), against the fake."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


# -- outcomes carried by the lease (POST /tasks/lease {"max", "outcomes"}) -------------------


def _buffered(rt: Any, platform: FakePlatform, n: int) -> list[str]:  # Any: the Runtime
    ids = _leased(platform, n)
    for task_id in ids:
        rt.spool.record_outcome(task_id, "ack", {"result": {"id": task_id}}, NOW)
    return ids


def test_buffered_outcomes_ride_on_the_beats_lease(tmp_path: Path, platform: FakePlatform) -> None:
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    ids = _buffered(rt, platform, 3)
    queued = platform.add_task(INSTANCE, "agent.noop")
    assert rt.beat()
    assert platform.lease_carried == [3]  # one request: the outcomes and the lease
    assert platform.outcome_posts == []
    assert rt.spool.outcome_depth() == 0
    for task_id in ids:
        assert platform.tasks[task_id].outcomes == [("ack", {"result": {"id": task_id}})]
    # The task that lease handed out ran, and its outcome was reported after it.
    assert platform.tasks[queued].state == "done"


def test_a_refused_carried_outcome_is_reported_alone_then_the_lease_is_plain(
    tmp_path: Path, platform: FakePlatform
) -> None:
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    good = _buffered(rt, platform, 2)
    rt.spool.record_outcome("not-a-task", "ack", {"result": {}}, NOW)
    queued = platform.add_task(INSTANCE, "agent.noop")
    assert rt.beat()
    assert platform.lease_carried == [3]  # refused (409): nothing recorded, nothing leased
    assert platform.outcome_posts[0] == 3  # then each judged on its own
    assert rt.spool.outcome_depth() == 0
    assert all(len(platform.tasks[t].outcomes) == 1 for t in good)
    assert platform.tasks[queued].state == "done"  # the plain lease went through
    assert rt.outcomes.carried  # still carrying: the platform takes the field


def test_a_platform_whose_lease_takes_no_outcomes_gets_them_on_their_own(
    tmp_path: Path, platform: FakePlatform
) -> None:
    platform.lease_outcomes = False
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    first = _buffered(rt, platform, 2)
    assert rt.beat()
    assert not rt.outcomes.carried
    assert platform.outcome_posts == [2]
    assert all(len(platform.tasks[t].outcomes) == 1 for t in first)
    _buffered(rt, platform, 2)
    assert rt.beat()
    assert platform.outcome_posts == [2, 2]  # not tried on the lease again
    assert rt.spool.outcome_depth() == 0


def test_a_lost_answer_keeps_the_carried_outcomes_and_they_count_once(
    tmp_path: Path, platform: FakePlatform
) -> None:
    rt = make_runtime(enrolled_agent(tmp_path, platform), platform)
    ids = _buffered(rt, platform, 3)
    platform.lose_responses, platform.lose_path = 1, "/node_api/tasks/lease"
    assert not rt.beat()  # recorded there, the answer lost: not resent (a lease)
    assert platform.lease_carried == [3]
    assert rt.spool.outcome_depth() == 3
    assert rt.beat()  # sent again: already recorded, answered 200, changed nothing
    assert platform.lease_carried == [3, 3]
    assert rt.spool.outcome_depth() == 0
    assert all(len(platform.tasks[t].outcomes) == 1 for t in ids)
