"""Issue 13, item 4: SIGKILL the agent ≥ 50 times with work pending, the platform down for some.

The platform is its own process (tests/agent/platformproc.py: ``create_app``
served by tlsserve over TLS, as ``platform serve --tls``), stopped (SIGTERM
or SIGKILL) and restarted on the same database and port. Every round the
operator enqueues tasks, test events are put in the agent's buffer, an
agent process starts, works, and is killed with SIGKILL while tasks and
events are pending; in some rounds the platform is stopped while the agent
runs, and stays down through the next agent's life.

Counted on the platform side at the end:

- outcomes: a trigger on the platform's ``tasks`` table logs every write
  that makes a task final, in the same transaction as the write, so a
  doubled record (issue 13 item 5's race included) shows as two rows and a
  platform crash cannot lose a row: exactly one per task, ``succeeded``;
- events: the stored fleet events: exactly one ``task.completed`` per task
  and each test event exactly once, under its own id.

Tasks may run again (killed mid-run, offered again after the visibility
timeout); their outcome and event are recorded once.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from powernode.agent.config import AgentConfig
from powernode.agent.lifecycle import SystemClock
from powernode.agent.spool import Spool, read_depths
from powernode.platform.app import create_app
from powernode.platform.db import FleetEvent, Task
from powernode.platform.db.session import is_busy, make_engine, write_session
from powernode.platform.services.nodeapi import tasks
from powernode.platform.tlsserve import server_identity
from powernode.run import run
from tests.agent.agentproc import AgentProcess, agent_cmd, wait_for, write_config
from tests.agent.platformproc import HOST, PlatformProcess, settings_for
from tests.platform.nodeapi.realplatform import RealPlatform

KILLS = 52
DOWN_EVERY = 7  # rounds i % 7 == 2: platform stopped mid-round; == 3: down at start too
TASKS_PER_ROUND = 4
FILL_PER_ROUND = 150
VISIBILITY = 2.0  # seconds: tasks a killed agent held come back soon
BUDGET = 600  # seconds for the whole test, a hard bound on every wait together

_TRIGGER = (
    """
CREATE TABLE IF NOT EXISTS test_outcome_writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    old_state TEXT NOT NULL,
    new_state TEXT NOT NULL
)""",
    """
CREATE TRIGGER IF NOT EXISTS test_outcome_written AFTER UPDATE OF state ON tasks
WHEN NEW.state IN ('succeeded', 'failed')
BEGIN
    INSERT INTO test_outcome_writes(task_id, old_state, new_state)
    VALUES (NEW.id, OLD.state, NEW.state);
END""",
)


@dataclass
class Figures:
    kills: int = 0
    kills_platform_down: int = 0
    platform_restarts: int = 0
    pending_events: list[int] = field(default_factory=list)  # in the agent's buffer at each kill
    pending_outcomes: list[int] = field(default_factory=list)
    pending_tasks: list[int] = field(default_factory=list)  # not final on the platform


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        import socket

        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = int(s.getsockname()[1])
        data = tmp / "platform"
        settings = settings_for(data, self.port)
        # The operator's side, in this process: the same database, never served from here.
        self.app = create_app(settings)
        _, _, ca = server_identity(settings, now=datetime.now(UTC))
        assert ca is not None
        self.url = f"https://{HOST}:{self.port}"
        self.engine = make_engine(settings.effective_database_url)
        with self.engine.begin() as conn:
            for statement in _TRIGGER:
                conn.execute(text(statement))
        self.platform = RealPlatform(self.url, ca, self.app, self.engine)
        self.iid = self.platform.instance("sigkill-1")
        self.server = PlatformProcess(data, self.port, VISIBILITY, tmp / "platform.log")
        self.state = tmp / "state"
        self.agents: list[AgentProcess] = []
        self.task_ids: list[str] = []
        self.fill_ids: list[str] = []
        self.config = self.write_config(flush_batch=20, flush_max_batches=1)  # ~100 events/s

    def write_config(self, **flush: int) -> Path:
        return write_config(
            self.tmp / "agent.toml",
            platform_url=self.url,
            state_dir=self.state,
            host_root=self.tmp,
            modules_root=self.tmp / "root",
            heartbeat_seconds=0.2,
            backoff_base_seconds=0.05,
            request_attempts=2,
            drain_seconds=5,
            max_in_flight=4,
            lease_max=4,
            **flush,
        )

    def enroll(self) -> None:
        token = self.tmp / "token"
        token.write_text(self.platform.token(self.iid))
        ca = str(self.platform.ca_file)
        agent_cmd(["enroll", "--config", str(self.config), "--token-file", str(token),
                   "--platform-ca", ca, "--no-discover"])  # fmt: skip

    def enqueue(self, rng: random.Random) -> None:
        choices = [
            rng.choice(
                [("agent.noop", {}), ("agent.sleep", {"seconds": round(rng.uniform(0.05, 0.4), 2)})]
            )
            for _ in range(TASKS_PER_ROUND)
        ]
        # The platform under test holds SQLite's write lock at times (every unit of work
        # is a write transaction); on a loaded machine past the 5 s busy timeout. The
        # operator's insert waits and tries again, bounded, as an operator would.
        for attempt in range(10):
            ids: list[str] = []
            try:
                with write_session(self.engine) as s:
                    ctx = self.platform._ctx(s)
                    for kind, payload in choices:
                        # max_attempts 100: a task killed mid-run many times is offered
                        # again, never failed as dead; what is checked is that it is
                        # recorded once.
                        ids.append(tasks.enqueue(ctx, self.iid, kind, payload, 100).id)
                    s.commit()
            except OperationalError as e:
                if not is_busy(e) or attempt == 9:
                    raise
                time.sleep(0.5)
                continue
            self.task_ids.extend(ids)
            return

    def fill(self, round_no: int) -> None:
        spool = Spool(AgentConfig(state_dir=self.state).spool_file)  # the agent is dead
        try:
            now = SystemClock().now()
            for n in range(FILL_PER_ROUND):
                self.fill_ids.append(
                    spool.append("test.fill", "info", {"round": round_no, "n": n}, now)
                )
        finally:
            spool.close()

    def agent(self) -> AgentProcess:
        proc = AgentProcess(self.config, self.tmp / f"agent{len(self.agents)}.log")
        self.agents.append(proc)
        return proc

    def states(self) -> Counter[str]:
        with Session(self.engine) as s:
            ids = set(self.task_ids)
            return Counter(t.state for t in s.scalars(select(Task)) if t.id in ids)

    def unrecorded(self) -> int:
        states = self.states()
        return states["queued"] + states["leased"]

    def leases(self) -> int:
        """Leases given so far (the attempts of every task)."""
        with Session(self.engine) as s:
            return sum(t.attempts for t in s.scalars(select(Task)))

    def events(self) -> list[FleetEvent]:
        with Session(self.engine) as s:
            q = select(FleetEvent).where(
                FleetEvent.instance_id == self.iid, FleetEvent.agent_event_id.is_not(None)
            )
            return list(s.scalars(q))

    def outcome_writes(self) -> list[tuple[str, str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT task_id, old_state, new_state FROM test_outcome_writes")
            )
            return [(r[0], r[1], r[2]) for r in rows]

    def close(self) -> None:
        for agent in self.agents:
            agent.close()
        self.server.close()
        self.engine.dispose()
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for point in sorted((m.split()[1] for m in mounts), reverse=True):
            if point.startswith(f"{self.tmp}/"):
                run(["umount", "-l", point], check=False)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


@pytest.mark.slow
def test_sigkill_with_work_pending_loses_and_doubles_no_outcome_and_no_event(
    world: World,
) -> None:
    started = time.monotonic()
    deadline = started + BUDGET
    rng = random.Random(20261207)  # noqa: S311 - reproducible kill points
    figures = Figures()
    world.server.start()
    world.enroll()

    def left() -> float:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"over the {BUDGET} s budget after {figures.kills} kills"
        return remaining

    for round_no in range(KILLS):
        phase = round_no % DOWN_EVERY
        world.enqueue(rng)
        world.fill(round_no)
        up = world.server.proc is not None
        leases = world.leases()
        agent = world.agent()
        if up:
            # This agent is working: it leased something (or everything is final already).
            wait_for(
                "a lease by this agent",
                lambda b=leases: world.leases() > b or world.states()["queued"] == 0,
                min(30, left()),
                0.02,
            )
            if phase == 2:  # the platform goes away while tasks run and events wait
                world.server.stop(kill=rng.random() < 0.5)
                figures.platform_restarts += 1
                up = False
            # Tasks run, outcomes are reported, events flow; killed at a random
            # moment, or earlier once only 2 tasks are left to record (work pending).
            until = time.monotonic() + rng.uniform(0.0, 1.2)
            while time.monotonic() < until and world.unrecorded() > 2:
                time.sleep(0.02)
        else:
            # Alive and finding the platform away: it leases nothing, keeps everything.
            away = lambda a=agent: "unreachable" in a.output()  # noqa: E731
            wait_for("the agent to find the platform away", away, min(30, left()), 0.02)
            time.sleep(rng.uniform(0.0, 0.5))
        agent.kill()
        figures.kills += 1
        figures.kills_platform_down += 0 if up else 1
        depths = read_depths(AgentConfig(state_dir=world.state).spool_file)
        assert depths is not None
        figures.pending_events.append(depths[0])
        figures.pending_outcomes.append(depths[1])
        states = world.states()
        figures.pending_tasks.append(states["queued"] + states["leased"])
        if not up and phase != 2:  # down for two agents' lives, then back on the same DB/port
            world.server.start(timeout=min(60, left()))
        left()

    # Every kill had events waiting in the buffer, and nearly every one tasks not yet
    # recorded: the loop kills once 2 are left, and on a loaded host the agent sometimes
    # records those 2 between the check and the kill (seen once in 52, in CI). The
    # guarantees below hold either way; this only shows the kills found work to lose.
    assert min(figures.pending_events) > 0, figures
    pending = zip(figures.pending_tasks, figures.pending_outcomes, strict=True)
    with_work = sum(1 for t, o in pending if t + o > 0)
    assert with_work >= 0.9 * figures.kills, figures
    assert figures.kills >= 50 and figures.kills_platform_down >= 8

    # The last agent, with the platform up, finishes everything.
    if world.server.proc is None:
        world.server.start(timeout=min(60, left()))
    world.config = world.write_config(flush_batch=500, flush_max_batches=20)
    final = world.agent()
    n_tasks, fills = len(world.task_ids), set(world.fill_ids)

    def done() -> bool:
        if world.states()["succeeded"] != n_tasks:
            return False
        stored = world.events()
        return (
            fills <= {str(e.agent_event_id) for e in stored}
            and sum(e.kind == "task.completed" for e in stored) >= n_tasks
        )

    with contextlib.suppress(AssertionError):  # timed out: the counts below say what is missing
        wait_for("every outcome and event recorded", done, min(60, left()), 0.2)
    assert final.terminate() == 0, final.output()
    elapsed = time.monotonic() - started

    # Outcomes: each task recorded exactly once, on the platform, as succeeded.
    writes = world.outcome_writes()
    assert Counter(t for t, _, _ in writes) == Counter(world.task_ids)
    assert {(old, new) for _, old, new in writes} == {("leased", "succeeded")}
    # Events: one task.completed per task, no task.failed; each test event once.
    stored = world.events()
    completed = Counter(e.payload["task_id"] for e in stored if e.kind == "task.completed")
    lost = [t for t in world.task_ids if not completed[t]]
    doubled = [t for t, n in completed.items() if n > 1]
    assert (lost, doubled) == ([], []), f"task.completed lost for {lost}, doubled for {doubled}"
    assert completed == Counter(world.task_ids)
    assert not [e for e in stored if e.kind == "task.failed"]
    fill = [e for e in stored if e.kind == "test.fill"]
    assert sorted(str(e.agent_event_id) for e in fill) == sorted(world.fill_ids)
    assert read_depths(AgentConfig(state_dir=world.state).spool_file) == (0, 0)
    with Session(world.engine) as s:
        attempts = [t.attempts for t in s.scalars(select(Task))]
    print(  # the figures for the docs (pytest -s)
        f"\nsigkill: {figures.kills} kills ({figures.kills_platform_down} with the platform "
        f"down, {figures.platform_restarts} platform stops), {n_tasks} tasks "
        f"({sum(a > 1 for a in attempts)} leased more than once, max {max(attempts)} leases), "
        f"{len(writes)} outcomes recorded, {len(completed)} task.completed events, "
        f"{len(fill)} test events; pending at each kill: events "
        f"{min(figures.pending_events)}-{max(figures.pending_events)}, tasks "
        f"{min(figures.pending_tasks)}-{max(figures.pending_tasks)}; {elapsed:.0f} s"
    )
