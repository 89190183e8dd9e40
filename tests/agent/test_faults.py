"""Faults against the real platform, each checked for nothing lost and nothing doubled.

Agent processes talk mTLS to the real platform (create_app on SQLite, served
by tlsserve/uvicorn on 127.0.0.1) that the tests stop and restart on the
same port; the in-process cases drive the loop with a manual clock over real
TLS, the platform running on the same manual clock. ``Recorder`` wraps the
app to see every event id posted (resends included) and to widen the window
between an events batch being stored and its answer.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from powernode.agent.certstore import CertStore, Credentials
from powernode.agent.config import AgentConfig
from powernode.agent.lifecycle import ManualClock, StopSignal, SystemClock
from powernode.agent.rotation import ROTATED, ROTATION_FAILED
from powernode.agent.runtime import Runtime
from powernode.agent.spool import Spool
from powernode.agent.tasks import InlineExecutor, default_registry
from powernode.agent.transport import Backoff, NodeClient, tls_context
from powernode.node.records import HeartbeatRequest
from powernode.platform.app import create_app
from powernode.platform.db.session import make_engine
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.platform.settings import Settings
from powernode.platform.tlsserve import build_server, server_identity
from powernode.run import run
from tests.agent.agentproc import AgentProcess, agent_cmd, wait_for, write_config
from tests.platform.nodeapi.realplatform import RealPlatform

HOST = "127.0.0.1"
Scope = dict[str, Any]
Message = dict[str, Any]


class Recorder:
    """ASGI wrapper: records the event ids posted (duplicates included), delays their answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received: list[str] = []
        self.events_delay = 0.0
        self.lock = threading.Lock()

    async def __call__(
        self, scope: Scope, receive: Callable[[], Any], send: Callable[[Message], Any]
    ) -> None:
        if scope["type"] != "http" or scope["path"] != "/node_api/events":
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def recv() -> Message:
            message: Message = await receive()
            body.extend(message.get("body", b""))
            return message

        async def snd(message: Message) -> None:
            if message["type"] == "http.response.start":
                try:
                    ids = [e["id"] for e in json.loads(bytes(body))["events"]]
                except (ValueError, KeyError, TypeError):
                    ids = []
                with self.lock:
                    self.received.extend(ids)
                if self.events_delay:
                    await anyio.sleep(self.events_delay)  # stored, not yet answered
            await send(message)

        await self.app(scope, recv, snd)


class Harness:
    """The real platform on 127.0.0.1 over TLS, stopped and restarted at will; an agent config."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        clock: Callable[[], datetime] | None = None,
        lifetime_days: int = 30,
        visibility: timedelta = timedelta(seconds=1),
    ) -> None:
        self.tmp = tmp_path
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = int(s.getsockname()[1])
        self.settings = Settings(
            data_dir=tmp_path / "platform",
            host=HOST,
            port=self.port,
            tls=True,
            node_cert_lifetime_days=lifetime_days,
        )
        policy = NodeApiPolicy(visibility_timeout=visibility)
        kw: dict[str, Any] = {"clock": clock} if clock else {}
        app = create_app(self.settings, node_policy=policy, **kw)
        self.recorder = Recorder(app)
        _, _, ca = server_identity(self.settings, now=datetime.now(UTC))
        assert ca is not None
        self.ca_file = ca
        self.url = f"https://{HOST}:{self.port}"
        self.engine = make_engine(self.settings.effective_database_url)
        self.platform = RealPlatform(self.url, ca, app, self.engine)
        self.iid = self.platform.instance("faults-1")
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.start_platform()
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
        token.write_text(self.platform.token(self.iid))
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

    def start_platform(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        self.server = build_server(
            self.recorder, self.settings, access_log=False, log_level="warning"
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        wait_for("the platform to listen", lambda: bool(self.server.started), 15, 0.02)

    def stop_platform(self) -> None:
        """Stop listening and cut every open connection, as a stopped platform would."""
        assert self.server is not None and self.thread is not None
        server = self.server
        loop = server.servers[0].get_loop()

        def cut() -> None:
            # abort(), not close(): a TLS close waits for the client's close_notify
            # (asyncio's SSL shutdown timeout, 30 s), an idle agent never sends it.
            for conn in list(server.server_state.connections):
                conn.transport.abort()

        server.should_exit = True
        time.sleep(0.2)  # the listening socket is closed: no new connections
        with contextlib.suppress(RuntimeError):  # the loop closed already: nothing open
            loop.call_soon_threadsafe(cut)
        self.thread.join(15)
        assert not self.thread.is_alive(), "the platform did not stop within 15 s"
        self.server = None

    def stored(self) -> list[Any]:
        return self.platform.events(self.iid)

    def agent(self) -> AgentProcess:
        proc = AgentProcess(self.config, self.tmp / f"agent{len(self.agents)}.log")
        self.agents.append(proc)
        return proc

    def close(self) -> None:
        for agent in self.agents:
            agent.close()
        if self.server is not None:
            self.stop_platform()
        self.engine.dispose()
        # An agent killed with SIGKILL leaves what it mounted (its run tmpfs) behind.
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for point in sorted((m.split()[1] for m in mounts), reverse=True):
            if point.startswith(f"{self.tmp}/"):
                run(["umount", "-l", point], check=False)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
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


def _kinds(harness: Harness, prefix: str = "") -> Counter[str]:
    return Counter(e.kind for e in harness.stored() if e.kind.startswith(prefix))


@pytest.mark.slow
def test_sigkill_while_flushing_loses_and_doubles_nothing(harness: Harness) -> None:
    harness.enroll()
    ids = _fill(harness.state, 3000)
    rec = harness.recorder
    rec.events_delay = 0.05  # widen the stored-but-not-answered window
    rng = random.Random(20250101)  # noqa: S311 - reproducible kill points

    def stored_ids() -> set[str]:
        return {str(e.agent_event_id) for e in harness.stored()}

    kills = 0
    for _ in range(20):
        before = len(rec.received)
        agent = harness.agent()
        # Kill only once it is flushing: some batch of this run reached the platform.
        wait_for("a batch posted", lambda b=before: len(rec.received) > b, 20, 0.005)
        time.sleep(rng.uniform(0, 0.15))
        agent.kill()
        kills += 1
        if stored_ids() >= set(ids):
            break
    final = harness.agent()
    wait_for("every event", lambda: stored_ids() >= set(ids), 60)
    assert final.terminate() == 0, final.output()
    stored = [e for e in harness.stored() if e.kind == "test.fill"]
    # Nothing lost, nothing doubled: each filled event exactly once, under its own id.
    assert Counter(e.payload["n"] for e in stored) == Counter(range(3000))
    assert sorted(str(e.agent_event_id) for e in stored) == sorted(ids)
    assert kills >= 3
    # Resends happened (kills between store and answer) and were absorbed by id.
    assert len([i for i in rec.received if i in set(ids)]) >= len(ids)
    assert Spool(AgentConfig(state_dir=harness.state).spool_file).depth() == 0


@pytest.mark.slow
def test_platform_stopped_and_restarted_outcomes_and_events_after(harness: Harness) -> None:
    harness.enroll()
    p = harness.platform
    tasks = [p.add_task(harness.iid, "agent.sleep", {"seconds": 0.5}) for _ in range(3)]
    agent = harness.agent()
    wait_for("tasks leased", lambda: all(p.tasks()[t].state == "leased" for t in tasks))
    harness.stop_platform()
    # Tasks finish and events pile up while the platform is away.
    time.sleep(1.5)
    assert all(p.tasks()[t].state == "leased" for t in tasks)
    harness.start_platform()
    done = lambda: all(p.tasks()[t].state == "succeeded" for t in tasks)  # noqa: E731
    wait_for("outcomes after restart", done)
    wait_for("events after restart", lambda: _kinds(harness, "task.")["task.completed"] >= 3)
    assert agent.terminate() == 0, agent.output()
    for t in tasks:
        # Leased once (the 1 s visibility timeout passed while away, but the agent
        # leases nothing while its outcomes are unreported), recorded once.
        assert p.tasks()[t].result == {"slept": 0.5}
    assert _kinds(harness, "task.") == {"task.completed": 3}
    every = [str(e.agent_event_id) for e in harness.stored()]
    assert Counter(harness.recorder.received) == Counter(every)  # each posted once
    assert "unreachable" in agent.output()


@pytest.mark.slow
def test_node_dying_with_leases_tasks_released_once(tmp_path: Path) -> None:
    # The platform's clock jumps past a long visibility timeout once the node is
    # dead, so the rerun (2 s) is never near its own lease's end: with a 1 s
    # timeout and a 1 s task the second lease could lapse mid-run (attempt 3).
    skew = [timedelta(0)]
    harness = Harness(
        tmp_path,
        clock=lambda: datetime.now(UTC) + skew[0],
        visibility=timedelta(seconds=120),
    )
    try:
        harness.enroll()
        p = harness.platform
        tasks = [p.add_task(harness.iid, "agent.sleep", {"seconds": 2.0}) for _ in range(2)]
        first = harness.agent()
        wait_for("tasks leased", lambda: all(p.tasks()[t].state == "leased" for t in tasks))
        first.kill()  # the node dies holding the leases, mid-task
        assert all(p.tasks()[t].result is None for t in tasks)
        skew[0] = timedelta(seconds=121)  # past the visibility timeout
        second = harness.agent()
        done = lambda: all(p.tasks()[t].state == "succeeded" for t in tasks)  # noqa: E731
        wait_for("tasks done", done, 30)
        assert second.terminate() == 0, second.output()
        for t in tasks:
            found = p.tasks()[t]
            assert found.attempts == 2  # offered again after the timeout, run once more
            assert found.result == {"slept": 2.0}
        assert _kinds(harness, "task.") == {"task.completed": 2}
    finally:
        harness.close()


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
        facts=lambda: HeartbeatRequest(boot_id="b"),
        rng=random.Random(1),  # noqa: S311 - reproducible jitter
    )


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[tuple[Harness, ManualClock]]:
    # The agent's manual clock starts 68 days and an hour in the past. The platform
    # keeps its own time, moved on with the agent's monotonic clock (both live 68
    # days in the rotation test) but not by the agent's wall-clock steps (NTP on
    # the node does not move the platform). The platform checks node certificates
    # against its time (the TLS layer skips time checks for client certificates);
    # the agent's OpenSSL checks the server's certificate against real time.
    clock = ManualClock(SystemClock().now() - timedelta(days=68, hours=1))
    start, mono = clock.now(), clock.monotonic()

    def platform_now() -> datetime:
        return start + timedelta(seconds=clock.monotonic() - mono)

    h = Harness(tmp_path, clock=platform_now, lifetime_days=90)
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
    task = harness.platform.add_task(harness.iid, "agent.noop")
    assert rt.beat()
    # Rotated, and the next requests already present the new certificate.
    assert rt.creds.info.serial != first.serial
    assert harness.platform.row(harness.iid).last_heartbeat_at == clock.now()
    assert harness.platform.tasks()[task].state == "succeeded"
    assert harness.platform.certificates() == 2
    assert _kinds(harness) == {ROTATION_FAILED: 4, ROTATED: 1, "task.completed": 1}
    assert all(e.severity == "critical" for e in harness.stored() if e.kind == ROTATION_FAILED)
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
        done.append(p.add_task(harness.iid, "agent.echo", {"step": str(step)}))
        rt.spool.append("test.step", "info", {"step": str(step)}, clock.now())
        assert rt.beat()
    found = p.tasks()
    assert all(found[t].state == "succeeded" and found[t].attempts == 1 for t in done)
    assert _kinds(harness) == {"test.step": 3, "task.completed": 3}
    every = [str(e.agent_event_id) for e in harness.stored()]
    assert Counter(harness.recorder.received) == Counter(every)
    assert p.certificates() == 1  # never at 75 % of life in wall time seen so far
    rt.client.close()
