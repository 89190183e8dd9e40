"""SIGTERM: drain in-flight tasks, report them, flush the buffer, return 0 (seed 000 lifecycle)."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from powernode.agent.lifecycle import (
    ManualClock,
    StopSignal,
    SystemClock,
    install_signal_handlers,
)
from powernode.agent.tasks import TaskContext, ThreadExecutor, default_registry
from tests.agent.fakeplatform import FakePlatform, enrolled_agent, make_runtime

NOW = datetime(2025, 1, 1, tzinfo=UTC)
INSTANCE = "11111111-2222-4333-8444-555555555555"


class _Gate:
    """A task handler that runs until the test opens the gate (bounded by a timeout)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, ctx: TaskContext) -> dict[str, Any]:
        self.started.set()
        self.release.wait(10)
        return {"released": self.release.is_set()}


def _threaded(tmp_path: Path, drain_seconds: float) -> tuple[Any, FakePlatform, _Gate, str]:
    platform = FakePlatform(SystemClock())
    config = dataclasses.replace(
        enrolled_agent(tmp_path, platform), drain_seconds=drain_seconds, heartbeat_seconds=0.05
    )
    gate = _Gate()
    registry = default_registry()
    registry.register("test.gate", gate)
    task = platform.add_task(INSTANCE, "test.gate")
    rt = make_runtime(config, platform, executor=ThreadExecutor(registry, 2))
    return rt, platform, gate, task


def _run(rt: Any) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(rt.run()), daemon=True)
    thread.start()
    return thread, codes


def test_sigterm_drains_in_flight_task_then_flushes(tmp_path: Path) -> None:
    rt, platform, gate, task = _threaded(tmp_path, drain_seconds=10)
    thread, codes = _run(rt)
    assert gate.started.wait(10)
    rt.stop.set("SIGTERM")
    leases_at_stop = platform.requests.count("POST /node_api/tasks/lease")
    threading.Timer(0.1, gate.release.set).start()
    thread.join(15)
    assert codes == [0]
    assert platform.tasks[task].outcomes == [("ack", {"result": {"released": True}})]
    assert [e["kind"] for e in platform.events.values()] == ["task.completed"]
    assert rt.spool.depth() == 0 and rt.spool.outcome_depth() == 0
    # No new lease after the stop.
    assert platform.requests.count("POST /node_api/tasks/lease") == leases_at_stop


def test_drain_timeout_fails_task_as_retryable(tmp_path: Path) -> None:
    rt, platform, gate, task = _threaded(tmp_path, drain_seconds=0.2)
    thread, codes = _run(rt)
    assert gate.started.wait(10)
    rt.stop.set("SIGTERM")
    thread.join(15)
    gate.release.set()
    assert codes == [0]
    [(verb, body)] = platform.tasks[task].outcomes
    assert verb == "fail" and body["retryable"] is True
    assert "agent stopped (SIGTERM) before the task finished" in body["error"]
    assert platform.tasks[task].state == "queued"  # offered again


def test_drain_with_platform_away_keeps_everything_buffered(tmp_path: Path) -> None:
    platform = FakePlatform(ManualClock(NOW))
    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    ids = [rt.spool.append("test.n", "info", {}, NOW) for _ in range(3)]
    rt.spool.record_outcome("t1", "ack", {"result": {}}, NOW)
    platform.down = True
    rt.stop.set("SIGTERM")
    assert rt.run() == 0
    assert [e.id for e in rt.spool.peek(10)] == ids
    assert rt.spool.outcome_depth() == 1


def test_signal_handler_sets_stop_once() -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = StopSignal()
    woken = threading.Event()
    stop.link(woken)
    try:
        install_signal_handlers(stop)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.is_set() and stop.reason == "SIGTERM" and woken.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # a second signal does not change the reason
        assert stop.reason == "SIGTERM"
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_manual_clock_wait_moves_time_unless_set() -> None:
    clock = ManualClock(NOW)
    event = threading.Event()
    assert clock.wait(event, 30) is False
    assert clock.now() == datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC)
    event.set()
    assert clock.wait(event, 30) is True
    assert clock.monotonic() == 1030.0
