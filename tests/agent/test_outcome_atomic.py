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
