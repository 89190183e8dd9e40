"""Issue 13, item 4: a task's outcome and its event are one SQLite transaction.

Regression for "the agent loses ``task.completed`` events on SIGKILL" (the
outcome and the event were two commits in ``Runtime._task_done``). A child
process finishes a task through the real ``Runtime._task_done`` and dies
(``os._exit``, no cleanup, as SIGKILL) at the moment SQLite is asked to
insert the event; the spool it leaves must hold both or neither.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import powernode
from powernode.agent.config import AgentConfig
from powernode.agent.spool import Spool

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(powernode.__file__).resolve().parents[1]  # the sources this test process runs

CHILD = """
import os, sys
from datetime import UTC, datetime
from pathlib import Path
from powernode.agent.lifecycle import ManualClock
from powernode.agent.tasks import TaskOutcome
from tests.agent.fakeplatform import FakePlatform, enrolled_agent, make_runtime

tmp, die_at, verb = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
platform = FakePlatform(ManualClock(datetime(2025, 1, 1, tzinfo=UTC)))
rt = make_runtime(enrolled_agent(tmp, platform), platform)

def trace(sql: str) -> None:
    if die_at and die_at in sql:
        os._exit(9)  # dies here: no rollback, no close, as SIGKILL would

rt.spool._db.set_trace_callback(trace)
body = {"result": {}} if verb == "ack" else {"error": "boom", "retryable": True}
rt._task_done(TaskOutcome("t-1", "agent.noop", verb, body))
rt._task_done(TaskOutcome("t-1", "agent.noop", verb, body))  # ran again: nothing new
os._exit(0)
"""


def _child(tmp: Path, die_at: str, verb: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp), die_at, verb],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 9), proc.stderr
    return proc.returncode


@pytest.mark.parametrize("verb", ["ack", "fail"])
@pytest.mark.parametrize(
    ("die_at", "expect"),
    [
        ("INSERT OR IGNORE INTO events", 0),  # between the two writes: neither kept
        ("COMMIT", 0),  # before the commit: neither kept
        ("", 1),  # no crash: both kept, once, though the task finished twice
    ],
    ids=["at-event-insert", "at-commit", "no-crash"],
)
def test_crash_between_outcome_and_event_keeps_both_or_neither(
    tmp_path: Path, die_at: str, expect: int, verb: str
) -> None:
    code = _child(tmp_path, die_at, verb)
    assert code == (9 if die_at else 0)
    spool = Spool(AgentConfig(state_dir=tmp_path / "state").spool_file)
    try:
        kinds = [e.kind for e in spool.peek(10)]
        want = "task.completed" if verb == "ack" else "task.failed"
        assert (spool.outcome_depth(), kinds) == (expect, [want] * expect)
    finally:
        spool.close()


def test_outcome_kept_when_its_event_cannot_be(tmp_path: Path) -> None:
    # An event over the payload limit is refused; the outcome it belongs to is not.
    from datetime import UTC, datetime

    spool = Spool(tmp_path / "s.db", max_payload_bytes=64)
    try:
        now = datetime(2025, 1, 1, tzinfo=UTC)
        big = ("task.failed", "warning", {"error": "x" * 100})
        assert spool.record_outcome("t-1", "fail", {"error": "x"}, now, event=big)
        assert (spool.outcome_depth(), spool.depth()) == (1, 0)
    finally:
        spool.close()


# -- a task offered again after it ran here: its outcome answers the new lease ---------------


def test_task_outliving_its_lease_runs_once_and_is_evented_once(tmp_path: Path) -> None:
    """Regression: a task running past its visibility timeout was offered again (attempt 2),
    ignored while running, reported for attempt 1 (refused, 409), offered a third time and
    run again: two runs and two ``task.completed`` events for one task."""
    import threading
    from datetime import UTC, datetime

    from powernode.agent.lifecycle import ManualClock
    from powernode.agent.tasks import TaskContext, ThreadExecutor, default_registry
    from tests.agent.fakeplatform import FakePlatform, enrolled_agent, make_runtime

    platform = FakePlatform(ManualClock(datetime(2025, 1, 1, tzinfo=UTC)))
    release, runs = threading.Event(), []

    def slow(ctx: TaskContext) -> dict[str, object]:
        runs.append(ctx.attempt)
        assert release.wait(30), "never released"
        return {"ran": ctx.attempt}

    registry = default_registry()
    registry.register("test.slow", slow)
    rt = make_runtime(
        enrolled_agent(tmp_path, platform), platform, executor=ThreadExecutor(registry)
    )
    instance = "11111111-2222-4333-8444-555555555555"
    task = platform.add_task(instance, "test.slow")
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    rt.beat()  # leased (attempt 1), running
    clock.advance(301)  # past the fake's 300 s visibility timeout
    rt.beat()  # offered again (attempt 2) while running: not run again
    release.set()
    deadline = time.monotonic() + 30
    while rt.spool.outcome_depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(3):
        rt.beat()
        clock.advance(301)
    assert runs == [1]
    assert platform.tasks[task].state == "done"
    assert platform.attempts_reported == [2]  # the lease the platform holds
    kinds = sorted(e["kind"] for e in platform.events.values())
    assert kinds == ["task.completed"]


def test_buffered_outcome_readopted_for_a_new_lease(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    spool = Spool(tmp_path / "s.db")
    try:
        now = datetime(2025, 1, 1, tzinfo=UTC)
        ev = ("task.completed", "info", {"task_id": "t-1"})
        spool.record_outcome("t-1", "ack", {"result": {}, "attempt": 1}, now, event=ev)
        assert spool.readopt_outcome("t-1", 3)
        assert not spool.readopt_outcome("t-2", 3)
        [outcome] = spool.outcomes()
        assert outcome.body == {"result": {}, "attempt": 3}
        assert spool.depth() == 1  # the event is not touched
    finally:
        spool.close()
