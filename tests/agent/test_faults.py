"""Faults, each checked for nothing lost and nothing doubled.

Agent processes talk mTLS to the platform on 127.0.0.1; the in-process
cases drive the loop with a manual clock over real TLS.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.certstore import CertStore, Credentials
from powernode.agent.config import AgentConfig
from powernode.agent.lifecycle import ManualClock, StopSignal, SystemClock
from powernode.agent.rotation import ROTATED, ROTATION_FAILED
from powernode.agent.runtime import Runtime
from powernode.agent.spool import Spool
from powernode.agent.tasks import InlineExecutor, default_registry
from powernode.agent.transport import Backoff, NodeClient, tls_context
from tests.agent.agentproc import AgentProcess, agent_cmd, wait_for, write_config
from tests.agent.fakeplatform import FakePlatform, TlsServer

INSTANCE = "9d5c0b7e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
HOST = "127.0.0.1"


class Harness:
    """A platform on 127.0.0.1 over TLS that can be stopped and restarted, and an agent config."""

    def __init__(self, tmp_path: Path, platform: FakePlatform) -> None:
        self.tmp = tmp_path
        self.platform = platform
        self.server: TlsServer | None = TlsServer(platform, HOST, tmp_path)
        self.port = self.server.httpd.server_address[1]
        self.url = self.server.url
        self.ca_file = self.server.ca_file
        self.state = tmp_path / "state"
        self.config = write_config(
            tmp_path / "agent.toml",
            platform_url=self.url,
            state_dir=self.state,
            host_root=tmp_path,
            heartbeat_seconds=0.2,
            backoff_base_seconds=0.05,
            request_attempts=2,
            flush_batch=100,
            drain_seconds=5,
        )
        self.agents: list[AgentProcess] = []

    def enroll(self) -> None:
        token = self.tmp / "token"
        token.write_text(self.platform.token(INSTANCE))
        agent_cmd(
            [
                "enroll",
                "--config",
                str(self.config),
                "--token-file",
                str(token),
                "--platform-ca",
                str(self.ca_file),
                "--no-discover",
            ]
        )

    def stop_platform(self) -> None:
        assert self.server is not None
        self.server.close()
        self.server = None

    def start_platform(self) -> None:
        self.server = TlsServer(self.platform, HOST, self.tmp, port=self.port)

    def agent(self) -> AgentProcess:
        proc = AgentProcess(self.config, self.tmp / f"agent{len(self.agents)}.log")
        self.agents.append(proc)
        return proc

    def close(self) -> None:
        for agent in self.agents:
            agent.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, FakePlatform(SystemClock(), visibility_timeout=timedelta(seconds=1)))
    try:
        yield h
    finally:
        h.close()


def _fill(state: Path, n: int) -> list[str]:
    spool = Spool(AgentConfig(state_dir=state).spool_file)
    now = SystemClock().now()
    ids = [spool.append("test.fill", "info", {"n": i}, now) for i in range(n)]
    spool.close()
    return ids


@pytest.mark.slow
def test_sigkill_while_flushing_loses_and_doubles_nothing(harness: Harness) -> None:
    harness.enroll()
    ids = _fill(harness.state, 3000)
    harness.platform.events_delay = 0.05  # widen the stored-but-not-answered window
    rng = random.Random(20250101)  # noqa: S311 - reproducible kill points
    kills = 0
    for _ in range(20):
        before = len(harness.platform.received)
        agent = harness.agent()
        # Kill only once it is flushing: some batch of this run reached the platform.
        wait_for("a batch posted", lambda b=before: len(harness.platform.received) > b, 20, 0.005)
        time.sleep(rng.uniform(0, 0.15))
        agent.kill()
        kills += 1
        if set(harness.platform.events) >= set(ids):
            break
    final = harness.agent()
    wait_for("every event", lambda: set(harness.platform.events) >= set(ids), 60)
    assert final.terminate() == 0, final.output()
    stored = list(harness.platform.events.values())
    # Nothing lost, nothing doubled: each filled event exactly once, no new ids for them.
    assert Counter(e["payload"]["n"] for e in stored) == Counter(range(3000))
    assert sorted(e["id"] for e in stored) == sorted(ids)
    assert kills >= 3
    # Resends happened (kills between store and answer) and were absorbed by id.
    assert len(harness.platform.received) >= len(ids)
    assert Spool(AgentConfig(state_dir=harness.state).spool_file).depth() == 0


@pytest.mark.slow
def test_platform_stopped_and_restarted_outcomes_and_events_after(harness: Harness) -> None:
    harness.enroll()
    p = harness.platform
    tasks = [p.add_task(INSTANCE, "agent.sleep", {"seconds": 0.5}) for _ in range(3)]
    agent = harness.agent()
    wait_for("tasks leased", lambda: all(p.tasks[t].state == "leased" for t in tasks))
    harness.stop_platform()
    # Tasks finish and events pile up while the platform is away.
    time.sleep(1.5)
    assert all(not p.tasks[t].outcomes for t in tasks)
    harness.start_platform()
    wait_for("outcomes after restart", lambda: all(p.tasks[t].state == "done" for t in tasks))
    wait_for("events after restart", lambda: len(p.events) >= 3)
    assert agent.terminate() == 0, agent.output()
    for t in tasks:
        assert len(p.tasks[t].outcomes) == 1 and p.tasks[t].attempt == 1
    assert Counter(e["kind"] for e in p.events.values()) == {"task.completed": 3}
    assert Counter(p.received) == Counter(list(p.events))  # each event posted once after restart
    assert "unreachable" in agent.output()


@pytest.mark.slow
def test_node_dying_with_leases_tasks_released_once(harness: Harness) -> None:
    harness.enroll()
    p = harness.platform
    tasks = [p.add_task(INSTANCE, "agent.sleep", {"seconds": 1.0}) for _ in range(2)]
    first = harness.agent()
    wait_for("tasks leased", lambda: all(p.tasks[t].state == "leased" for t in tasks))
    first.kill()  # the node dies holding the leases, mid-task
    assert all(p.tasks[t].outcomes == [] for t in tasks)
    time.sleep(1.1)  # past the 1 s visibility timeout
    second = harness.agent()
    wait_for("tasks done", lambda: all(p.tasks[t].state == "done" for t in tasks), 30)
    assert second.terminate() == 0, second.output()
    for t in tasks:
        assert p.tasks[t].attempt == 2  # offered again after the timeout, run once more
        assert p.tasks[t].outcomes == [("ack", {"result": {"slept": 1.0}})]
    assert Counter(e["kind"] for e in p.events.values()) == {"task.completed": 2}


# -- in process, manual clock, real TLS --------------------------------------------------


def _tls_runtime(harness: Harness, clock: ManualClock) -> Runtime:
    config = AgentConfig(
        platform_url=harness.url, state_dir=harness.state, host_root=harness.tmp, request_attempts=1
    )
    stop = StopSignal()

    def factory(creds: Credentials) -> NodeClient:
        return NodeClient(
            harness.url,
            tls=tls_context(creds.platform_ca_file, creds.cert_file, creds.key_file),
            clock=clock,
            stop=stop.event,
            backoff=Backoff(0.01, 0.01),
            attempts=1,
            timeout=5,
        )

    return Runtime(
        config,
        store=CertStore(config.pki_dir),
        spool=Spool(config.spool_file),
        client_factory=factory,
        executor=InlineExecutor(default_registry()),
        clock=clock,
        stop=stop,
        facts=lambda: {"boot_id": "b"},
        rng=random.Random(1),  # noqa: S311 - reproducible jitter
    )


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[tuple[Harness, ManualClock]]:
    # The TLS handshake checks certificates against real time, so the manual clock
    # starts 68 days and an hour in the past: moved on by 68 days it is still just
    # behind real time, and every certificate the fake issues is valid for OpenSSL.
    clock = ManualClock(SystemClock().now() - timedelta(days=68, hours=1))
    h = Harness(tmp_path, FakePlatform(clock))
    try:
        yield h, clock
    finally:
        h.close()


def test_rotation_with_platform_away_past_75_percent_over_tls(
    manual: tuple[Harness, ManualClock],
) -> None:
    harness, clock = manual
    harness.enroll()
    rt = _tls_runtime(harness, clock)
    first = rt.creds.info
    assert rt.beat()
    harness.stop_platform()
    clock.advance(timedelta(days=68).total_seconds())
    for _ in range(4):
        assert not rt.beat()
        clock.advance(1)
    assert rt.rotation_failure is not None and rt.rotation_failure.attempts == 4
    harness.start_platform()
    task = harness.platform.add_task(INSTANCE, "agent.noop")
    assert rt.beat()
    # Rotated, and the next requests already present the new certificate.
    assert rt.creds.info.serial != first.serial
    assert harness.platform.heartbeats[-1][0] == INSTANCE
    assert harness.platform.tasks[task].state == "done"
    kinds = Counter(e["kind"] for e in harness.platform.events.values())
    assert kinds == {ROTATION_FAILED: 4, ROTATED: 1, "task.completed": 1}
    assert all(
        e["severity"] == "critical"
        for e in harness.platform.events.values()
        if e["kind"] == ROTATION_FAILED
    )
    assert len(CertStore(rt.config.pki_dir).archived()) == 1
    rt.client.close()


def test_clock_jumps_do_not_lose_or_repeat_anything(manual: tuple[Harness, ManualClock]) -> None:
    harness, clock = manual
    harness.enroll()
    rt = _tls_runtime(harness, clock)
    p = harness.platform
    done: list[str] = []
    for step in (timedelta(days=-30), timedelta(days=45), timedelta(hours=-5)):
        clock.shift_wall(step)  # NTP stepping the wall clock; monotonic time goes on
        done.append(p.add_task(INSTANCE, "agent.echo", {"step": str(step)}))
        rt.spool.append("test.step", "info", {"step": str(step)}, clock.now())
        assert rt.beat()
    assert all(len(p.tasks[t].outcomes) == 1 for t in done)
    kinds: Counter[Any] = Counter(e["kind"] for e in p.events.values())
    assert kinds == {"test.step": 3, "task.completed": 3}
    assert Counter(p.received) == Counter(list(p.events))
    assert len(p.certs_issued) == 1  # never at 75 % of life in wall time seen so far
    rt.client.close()
