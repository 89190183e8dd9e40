"""The service loop against the fake platform, driven by a manual clock (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from powernode.agent.lifecycle import ManualClock
from powernode.agent.runtime import HostFacts
from powernode.agent.spool import Spool
from powernode.agent.tasks import InlineExecutor, TaskContext, TaskError, default_registry
from tests.agent.fakeplatform import FakePlatform, enrolled_agent, make_runtime

NOW = datetime(2025, 1, 1, tzinfo=UTC)
INSTANCE = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform(ManualClock(NOW))


def _kinds(platform: FakePlatform) -> list[str]:
    return sorted(e["kind"] for e in platform.events.values())


def test_beat_heartbeats_leases_executes_reports_flushes(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = enrolled_agent(tmp_path, platform)
    echo = platform.add_task(INSTANCE, "agent.echo", {"x": 1})
    noop = platform.add_task(INSTANCE, "agent.noop")
    rt = make_runtime(config, platform)
    assert rt.beat()
    assert [i for i, _ in platform.heartbeats] == [INSTANCE]
    assert platform.tasks[echo].outcomes == [("ack", {"result": {"echo": {"x": 1}}})]
    assert platform.tasks[noop].state == "done"
    assert _kinds(platform) == ["task.completed", "task.completed"]
    assert rt.spool.depth() == 0 and rt.spool.outcome_depth() == 0


def test_run_keeps_the_30s_cadence_on_the_monotonic_clock(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = enrolled_agent(tmp_path, platform)
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    start = clock.monotonic()
    rt = make_runtime(config, platform)
    # A wall-clock step in the middle must not change the cadence.
    platform.add_task(INSTANCE, "agent.noop")
    clock.shift_wall(timedelta(days=3))
    assert rt.run(max_beats=4) == 0
    assert len(platform.heartbeats) == 4
    assert clock.monotonic() - start == pytest.approx(90.0)


def test_unknown_kind_fails_not_retryable(tmp_path: Path, platform: FakePlatform) -> None:
    config = enrolled_agent(tmp_path, platform)
    task = platform.add_task(INSTANCE, "thing.unknown")
    make_runtime(config, platform).beat()
    [(verb, body)] = platform.tasks[task].outcomes
    assert verb == "fail" and body["retryable"] is False
    assert "no handler for task kind 'thing.unknown'" in body["error"]
    assert platform.tasks[task].state == "failed"


def test_handler_errors_fail_with_their_retryability(
    tmp_path: Path, platform: FakePlatform
) -> None:
    registry = default_registry()
    calls: list[int] = []

    def flaky(ctx: TaskContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise OSError("disk busy")
        if ctx.attempt == 2:
            raise TaskError("still busy", retryable=True)
        return {"ok": ctx.attempt}

    registry.register("test.flaky", flaky)
    config = enrolled_agent(tmp_path, platform)
    task = platform.add_task(INSTANCE, "test.flaky")
    rt = make_runtime(config, platform, executor=InlineExecutor(registry))
    for _ in range(3):
        rt.beat()
    assert calls == [1, 2, 3]
    assert [v for v, _ in platform.tasks[task].outcomes] == ["fail", "fail", "ack"]
    assert platform.tasks[task].outcomes[0][1] == {"error": "OSError: disk busy", "retryable": True}


def test_outage_keeps_outcomes_and_events_until_platform_returns(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = enrolled_agent(tmp_path, platform)
    task = platform.add_task(INSTANCE, "agent.noop")
    rt = make_runtime(config, platform)
    platform.lose_responses = 3  # heartbeat and lease commit; the lease answer is lost
    rt.beat()
    platform.down = True
    for _ in range(5):
        assert not rt.beat()
    rt.spool.append("test.note", "info", {"during": "outage"}, platform.clock.now())
    platform.down = False
    # The lease answer was lost: the task comes back after the visibility timeout.
    platform.clock.advance(301)  # type: ignore[attr-defined]
    assert rt.beat()
    assert platform.tasks[task].state == "done"
    assert len(platform.tasks[task].outcomes) == 1
    assert _kinds(platform) == ["task.completed", "test.note"]
    assert rt.spool.depth() == 0


def test_lost_event_answers_resend_and_platform_dedups(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    ids = [rt.spool.append("test.n", "info", {"n": i}, NOW) for i in range(1200)]
    platform.lose_responses = 2  # the platform stores two batches, their answers are lost
    platform.lose_path = "/node_api/events"
    for _ in range(4):
        rt.beat()
    assert sorted(platform.events) == sorted(ids)
    assert platform.duplicates > 0  # resent, and the platform stored them once
    assert max(platform.event_posts) <= 500
    assert rt.spool.depth() == 0


def test_buffered_outcome_is_reported_not_rerun(tmp_path: Path, platform: FakePlatform) -> None:
    registry = default_registry()
    runs: list[str] = []
    registry.register("test.once", lambda ctx: runs.append(ctx.task_id) or {})
    config = enrolled_agent(tmp_path, platform)
    task = platform.add_task(INSTANCE, "test.once")
    spool = Spool(config.spool_file)
    # As if the agent ran it, buffered the outcome and died before reporting.
    spool.record_outcome(task, "ack", {"result": {"ran": "before crash"}}, NOW)
    platform.tasks[task].state = "leased"
    platform.tasks[task].attempt = 1
    platform.tasks[task].lease_expires_at = NOW - timedelta(seconds=1)
    rt = make_runtime(config, platform, spool=spool, executor=InlineExecutor(registry))
    # The lease comes before the report (as when the ack's answer was lost): the
    # platform re-offers the task; the agent must not run it again.
    rt.report_outcomes = lambda: None  # type: ignore[method-assign]
    rt.beat()
    del rt.report_outcomes
    rt.beat()
    assert runs == []
    assert platform.tasks[task].outcomes == [("ack", {"result": {"ran": "before crash"}})]


def test_poison_event_is_dropped_alone(tmp_path: Path, platform: FakePlatform) -> None:
    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    good = [rt.spool.append("test.ok", "info", {}, NOW) for _ in range(3)]
    bad = rt.spool.append("test.bad", "info", {}, NOW)
    inner = rt.client._http._transport

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/node_api/events" and bad.encode() in request.content:
            return httpx.Response(422, json={"detail": f"event {bad}: bad payload"})
        return inner.handle_request(request)

    rt.client._http._transport = httpx.MockTransport(refusing)
    assert rt.beat()
    assert sorted(platform.events) == sorted(good)
    assert rt.spool.depth() == 0


def test_unreachable_backoff_is_bounded_by_the_interval(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = enrolled_agent(tmp_path, platform)
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    rt = make_runtime(config, platform)
    platform.down = True
    start = clock.monotonic()
    attempts = 0
    original = rt.beat

    def counting() -> bool:
        nonlocal attempts
        attempts += 1
        if attempts == 30:
            platform.down = False
        return original()

    rt.beat = counting  # type: ignore[method-assign]
    rt.run(max_beats=1)
    elapsed = clock.monotonic() - start
    assert attempts == 30
    # Every gap <= 30 s of backoff plus the bounded per-request retries.
    assert elapsed <= 29 * (30 + 3 * 2)
    assert rt.failed_beats == 0


def test_host_facts_read_under_root(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "sys/kernel/random").mkdir(parents=True)
    (proc / "sys/kernel/random/boot_id").write_text("5e0b1c1e-0000-4000-8000-000000000000\n")
    (proc / "loadavg").write_text("0.50 0.25 0.10 1/100 42\n")
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 500 kB\n")
    facts = HostFacts(tmp_path, tmp_path / "state/agent")()
    assert facts.boot_id == "5e0b1c1e-0000-4000-8000-000000000000"
    assert facts.load == [0.5, 0.25, 0.1]
    assert facts.mem == {"total": 1024000, "available": 512000}
    assert facts.running_module_digests == {}


def test_systemd_ready_watchdog_status_and_the_metrics_textfile(
    tmp_path: Path, platform: FakePlatform
) -> None:
    """Under systemd the loop reports READY, pings the watchdog from the loop, says its
    status per beat and STOPPING at the end; the textfile is written after each beat."""
    import dataclasses

    from prometheus_client.parser import text_string_to_metric_families

    from powernode.agent.textfile import FILENAME
    from powernode.systemd import Notifier

    class Recording(Notifier):
        """The loop's messages in order (the socket itself: tests/test_systemd.py)."""

        def __init__(self) -> None:
            super().__init__({"NOTIFY_SOCKET": "/unused", "WATCHDOG_USEC": "20000000"})  # 20 s
            self.sent: list[str] = []

        def notify(self, **assignments: str) -> bool:
            self.sent.append("\n".join(f"{k.upper()}={v}" for k, v in assignments.items()))
            return True

    metrics = tmp_path / "textfile"
    metrics.mkdir()
    config = dataclasses.replace(enrolled_agent(tmp_path, platform), metrics_textfile_dir=metrics)
    notifier = Recording()
    rt = make_runtime(config, platform, notifier=notifier)
    assert rt.run(max_beats=3) == 0
    messages = notifier.sent
    assert messages[0] == "READY=1\nSTATUS=started"
    assert messages[-1] == "STOPPING=1"
    assert messages.count("STATUS=3 heartbeats answered") == 1
    # 3 beats 30 s apart on the manual clock: the loop woke every 10 s (half the
    # watchdog interval) to ping, never letting 20 s pass silent.
    assert messages.count("WATCHDOG=1") >= 6
    families = {f.name: f for f in text_string_to_metric_families((metrics / FILENAME).read_text())}
    assert families["powernode_agent_heartbeats"].samples[0].value == 3
    assert families["powernode_agent_heartbeat_failures"].samples[0].value == 0
