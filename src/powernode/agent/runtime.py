"""The service loop (``powernode-agent service``): heartbeat, lease, execute, report, flush.

Seed 000 (``internal/runtime``): "30s heartbeat tick, task lease, cert
rotation timer, event buffer flush". One beat, in order:

1. report outcomes still waiting in the buffer (from before a crash or an outage)
   when this beat will not lease; when it will, they ride on the lease (4.);
2. rotate the certificate if 75 % of its lifetime has passed; while the last
   attempt failed, append a ``system.cert.rotation_failed`` critical event;
3. heartbeat; 4. lease up to the free executor slots (none while draining),
   the request carrying up to 100 buffered outcomes (one transaction on the
   platform: :meth:`powernode.agent.outcomes.OutcomeReporter.lease`);
5. report outcomes; 6. flush the event buffer (bounded batches of ≤ 500);
7. every ``modules_sync_seconds``, reconcile the modules with
   ``GET /node_api/modules`` (:class:`powernode.agent.modules.service.ModuleService`)
   and flush the events that produced. It runs last so that a long pull
   delays the next heartbeat, never this one; a ``modules.sync`` task
   reconciles at once (on the executor's thread, with its own client).

A beat stops at the first :class:`PlatformUnreachable`; the next one comes
after a full-jitter backoff capped at the heartbeat interval, so an outage
never stretches the cadence past 30 s and a fleet does not reconnect in step.
Outcomes are written to the buffer by the executor's thread as soon as a task
ends and reported at once; a leased task whose outcome is already buffered is
not run again. Scheduling uses the clock's monotonic time, certificates and
timestamps its wall time (:mod:`powernode.agent.lifecycle`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from powernode import __version__
from powernode.agent import textfile
from powernode.agent.certstore import CertStore, Credentials, rfc3339
from powernode.agent.config import AgentConfig
from powernode.agent.lifecycle import Clock, StopSignal
from powernode.agent.manualrotate import ROTATION_LOCK, rotated_on_disk
from powernode.agent.outcomes import POISON, OutcomeReporter
from powernode.agent.rotation import (
    ROTATED,
    ROTATION_FAILED,
    RotationFailure,
    failure_payload,
    record_failure,
    rotate,
    rotation_due,
)
from powernode.agent.shutdown import unmount_on_stop
from powernode.agent.spool import Spool
from powernode.agent.tasks import Executor, TaskContext, TaskOutcome
from powernode.agent.textfile import AgentFigures
from powernode.agent.transport import Backoff, NodeClient, PlatformRefused, PlatformUnreachable
from powernode.errors import DataError, PowernodeError
from powernode.node.fields import JSON
from powernode.node.records import HeartbeatRequest
from powernode.oci.digest import Digest
from powernode.systemd import Notifier

if TYPE_CHECKING:
    from powernode.agent.modules.layout import NodeLayout
    from powernode.agent.modules.service import ModuleService

log = logging.getLogger(__name__)

MAX_EVENT_ERROR = 4096  # a failure's message in its event; the outcome keeps it whole

ClientFactory = Callable[[Credentials], NodeClient]
Facts = Callable[[], HeartbeatRequest]


class Runtime:
    """One agent's service loop; every side effect comes in through the constructor."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        store: CertStore,
        spool: Spool,
        client_factory: ClientFactory,
        executor: Executor,
        clock: Clock,
        stop: StopSignal,
        facts: Facts,
        rng: random.Random | None = None,
        modules: ModuleService | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self.outcomes = OutcomeReporter(spool)
        self._factory = client_factory
        self.executor = executor
        self.clock = clock
        self.stop = stop
        self._facts = facts
        self._rng = rng or random.SystemRandom()
        self._backoff = Backoff(config.backoff_base_seconds, config.heartbeat_seconds)
        self._wake = threading.Event()
        # Tasks offered again while running here: task id -> the attempt now leased.
        self._reoffered: dict[str, int] = {}
        self._attempts_lock = threading.Lock()
        stop.link(self._wake)
        self.creds = store.load()
        self.client = client_factory(self.creds)
        self.rotation_failure: RotationFailure | None = None
        self.beats = 0  # heartbeats the platform answered
        self.failed_beats = 0  # consecutive beats that did not reach the platform
        self.modules = modules
        self._next_modules_sync = clock.monotonic()
        # systemd (docs/operations.md): READY once the loop runs, WATCHDOG from the
        # loop itself, so a stuck loop stops the pings and systemd restarts it.
        self.notifier = notifier or Notifier({})
        self.last_beat: datetime | None = None

    # -- the loop ----------------------------------------------------------------------

    def run(self, max_beats: int | None = None) -> int:
        """Loop until stopped (or ``max_beats`` answered heartbeats), drain, return 0."""
        next_beat = self.clock.monotonic()
        self._start_modules()
        self.notifier.ready("started")
        while not self.stop.is_set():
            self.notifier.watchdog(now=self.clock.monotonic())
            if self.clock.monotonic() >= next_beat:
                reached = self.beat()
                if reached:
                    self.failed_beats = 0
                    self.last_beat = self.clock.now()
                    delay = self.config.heartbeat_seconds
                else:
                    self.failed_beats += 1
                    delay = self._backoff.delay(self.failed_beats - 1, self._rng)
                self._status(reached)
                next_beat = self.clock.monotonic() + delay
                if max_beats is not None and self.beats >= max_beats:
                    self.stop.set(f"{max_beats} heartbeats done")
                    break
            elif self.spool.outcome_depth():
                self._guard(self.report_outcomes)
            wait = max(0.0, next_beat - self.clock.monotonic())
            if self.notifier.watchdog_interval is not None:  # wake in time to ping
                wait = min(wait, self.notifier.watchdog_interval / 2)
            self.clock.wait(self._wake, wait)
            self._wake.clear()
        self.notifier.stopping()
        self.drain()
        return 0

    def _status(self, reached: bool) -> None:
        """After a heartbeat cycle: systemd's status line and the metrics textfile."""
        if reached:
            self.notifier.status(f"{self.beats} heartbeats answered")
        else:
            self.notifier.status(f"platform unreachable ({self.failed_beats} beats missed)")
        directory = self.config.metrics_textfile_dir
        if directory is None:
            return
        figures = AgentFigures(
            version=__version__,
            heartbeats=self.beats,
            failed_heartbeats=self.failed_beats,
            last_heartbeat=self.last_beat,
            events_pending=self.spool.depth(),
            outcomes_pending=self.spool.outcome_depth(),
            certificate_not_after=self.creds.info.not_after,
            running_modules={
                name: str(d) for name, d in self._facts().running_module_digests.items()
            },
        )
        try:
            textfile.write(directory, figures)
        except OSError as e:  # metrics never stop the agent
            log.warning("cannot write the metrics textfile in %s: %s", directory, e)

    def beat(self) -> bool:
        """One heartbeat cycle; whether the platform was reached."""
        return self._guard(self._beat)

    def _beat(self) -> None:
        leasing = not self.stop.is_set() and self._slots() > 0
        if not leasing:
            self.report_outcomes()
        self._pick_up_manual_rotation()
        self._maybe_rotate()
        self.client.heartbeat(self._facts())
        self.beats += 1
        if leasing:
            self._lease()  # carries the outcomes still buffered (agent/outcomes.py)
        self.report_outcomes()
        self.flush_events()
        if self.modules is not None and self.clock.monotonic() >= self._next_modules_sync:
            self._next_modules_sync = self.clock.monotonic() + self.config.modules_sync_seconds
            # A failed sync is logged and evented, and retried after the interval; the
            # heartbeat already went through, so the beat itself succeeded.
            with contextlib.suppress(PowernodeError):
                self.modules.sync_with(self.client)
            self.flush_events()

    def _guard(self, step: Callable[[], None]) -> bool:
        try:
            step()
        except PlatformUnreachable as e:
            log.warning("platform unreachable: %s", e)
            return False
        except PowernodeError as e:
            # Refusals (revoked/expired certificate) and bad answers: log, keep running.
            log.error("%s", e)
            return False
        return True

    # -- modules -----------------------------------------------------------------------

    def _start_modules(self) -> None:
        if self.modules is None:
            return
        try:
            self.modules.start()
        except PowernodeError as e:
            # The loop must still run: heartbeats and tasks are how the operator finds out.
            log.error("could not restore the attached modules: %s", e)
            self._event("module.restore_failed", "error", {"error": str(e)})

    def modules_task(self, ctx: TaskContext) -> dict[str, JSON]:
        """The ``modules.sync`` task: reconcile now, on this (executor) thread, own client."""
        if self.modules is None:
            raise PowernodeError("this agent runs without the module layer")
        return self.modules.task(lambda: self._factory(self.creds))

    # -- rotation ----------------------------------------------------------------------

    def _pick_up_manual_rotation(self) -> None:
        """Use the pair ``rotate`` (CLI or the ``agent.rotate`` task) installed on disk."""
        if not rotated_on_disk(self.store, self.creds):
            return
        self.client.close()
        self.creds = self.store.load()
        self.client = self._factory(self.creds)
        log.info("switched to the rotated certificate, serial %x", self.creds.info.serial)

    def _maybe_rotate(self) -> None:
        now = self.clock.now()
        info = self.creds.info
        if not rotation_due(info, now, self.config.rotate_at_fraction):
            return
        try:
            with ROTATION_LOCK:
                new = rotate(self.store, self.client, now)
        except PowernodeError as e:
            self.rotation_failure = record_failure(self.rotation_failure, now, str(e))
            log.error(
                "certificate rotation failed (attempt %d): %s", self.rotation_failure.attempts, e
            )
            # Seed 000: a critical event on every heartbeat while rotation is failing.
            self._event(
                ROTATION_FAILED, "critical", failure_payload(self.rotation_failure, info, now)
            )
            if isinstance(e, PlatformUnreachable):
                raise
            return
        previous, self.rotation_failure = self.rotation_failure, None
        self.client.close()
        self.creds = self.store.load()
        self.client = self._factory(self.creds)
        self._event(
            ROTATED,
            "info",
            {
                "instance_id": new.instance_id,
                "old_serial": f"{info.serial:x}",
                "new_serial": f"{new.serial:x}",
                "not_after": rfc3339(new.not_after),
                "failed_attempts_before": previous.attempts if previous else 0,
            },
        )

    # -- tasks -------------------------------------------------------------------------

    def _slots(self) -> int:
        return min(self.config.lease_max, self.executor.free_slots())

    def _lease(self) -> None:
        slots = self._slots()
        if slots <= 0 or self.stop.is_set():
            self.report_outcomes()
            return
        running = self.executor.in_flight()
        for task in self.outcomes.lease(self.client, slots):
            if task.id in running or self.spool.has_outcome(task.id):
                # Still running here (it outlived its lease), or ran before a crash or
                # outage: not run again, and its outcome answers this lease, whose attempt
                # is the only one the platform takes now. Reported with the old attempt it
                # would be refused (409), the task offered once more and run again: a
                # second run and a second task.completed event.
                log.info("task %s offered again (attempt %d); not run again", task.id, task.attempt)
                self._readopt(task.id, task.attempt)
                continue
            ctx = TaskContext(
                task.id,
                task.kind,
                task.payload,
                task.attempt,
                task.lease_expires_at,
                self.stop.event,
            )
            self.executor.submit(ctx, self._task_done)

    def _task_done(self, outcome: TaskOutcome) -> None:
        # Runs on the executor's thread: make the outcome durable before anything else,
        # with its event in the same transaction (a crash keeps both or neither).
        kind, severity = (
            ("task.completed", "info") if outcome.verb == "ack" else ("task.failed", "warning")
        )
        payload: dict[str, JSON] = {"task_id": outcome.task_id, "kind": outcome.kind}
        if outcome.verb == "fail":
            payload.update(outcome.body)
            error = str(payload.get("error", ""))
            if len(error) > MAX_EVENT_ERROR:
                payload["error"] = error[:MAX_EVENT_ERROR] + "…"
        try:
            with self._attempts_lock:
                body = outcome.body
                attempt = self._reoffered.pop(outcome.task_id, None)
                if attempt is not None and "attempt" in body:
                    body = {**body, "attempt": attempt}
                self.spool.record_outcome(
                    outcome.task_id,
                    outcome.verb,
                    body,
                    self.clock.now(),
                    event=(kind, severity, payload),
                )
        except Exception:
            log.exception("could not buffer the outcome of task %s", outcome.task_id)
        self._wake.set()

    def _readopt(self, task_id: str, attempt: int) -> None:
        """The outcome of ``task_id``, buffered or to come, answers lease ``attempt``."""
        with self._attempts_lock:
            if not self.spool.readopt_outcome(task_id, attempt):
                self._reoffered[task_id] = attempt  # still running: _task_done takes it
            else:
                self._reoffered.pop(task_id, None)

    def report_outcomes(self) -> None:
        """Send every buffered outcome (agent/outcomes.py: in batches of up to 100)."""
        self.outcomes.report(self.client)

    # -- events ------------------------------------------------------------------------

    def _event(self, kind: str, severity: str, payload: dict[str, JSON]) -> None:
        self.spool.append(kind, severity, payload, self.clock.now())

    def flush_events(self) -> int:
        """Deliver buffered events in bounded batches; returns how many left the buffer."""
        sent = 0
        for _ in range(self.config.flush_max_batches):
            batch = self.spool.peek(self.config.flush_batch)
            if not batch:
                break
            try:
                self.client.post_events([e.to_wire() for e in batch])
            except PlatformRefused as e:
                if e.status not in POISON:
                    raise
                # One bad event must not block the buffer for ever: send one by one
                # and drop only those the platform refuses on their own.
                for event in batch:
                    try:
                        self.client.post_events([event.to_wire()])
                    except PlatformRefused as one:
                        if one.status not in POISON:
                            raise
                        log.error("platform refused event %s (%s): %s", event.id, event.kind, one)
                    self.spool.remove([event.id])
                    sent += 1
                continue
            self.spool.remove([e.id for e in batch])
            sent += len(batch)
        dropped = self.spool.take_dropped()
        if dropped:
            self._event("system.events.dropped", "warning", {"count": dropped})
        return sent

    def _flush_all(self) -> None:
        self.flush_events()

    # -- shutdown ----------------------------------------------------------------------

    def drain(self) -> None:
        """Seed 000 lifecycle: wait (bounded) for in-flight tasks, report, flush."""
        deadline = self.clock.monotonic() + self.config.drain_seconds
        while self.executor.in_flight():
            left = deadline - self.clock.monotonic()
            if left <= 0:
                break
            self._wake.clear()
            self.clock.wait(self._wake, min(left, 1.0))
        now = self.clock.now()
        for task_id in self.executor.in_flight():
            body: dict[str, JSON] = {
                "error": f"agent stopped ({self.stop.reason}) before the task finished "
                f"(drain_seconds={self.config.drain_seconds:g})",
                "retryable": True,
            }
            self.spool.record_outcome(task_id, "fail", body, now)
        if self._guard(self.report_outcomes):
            self._guard(self._flush_all)
        left = self.spool.depth() + self.spool.outcome_depth()
        if left:
            log.warning("%d events/outcomes stay buffered until the platform is reachable", left)
        self.client.close()
        if self.modules is not None:
            unmount_on_stop(self.modules.layout, self.stop.reason)


class HostFacts:
    """What a heartbeat reports about the host, read under ``root``.

    With ``layout``, ``running_module_digests`` are the modules of the union
    being served (what the drift report compares); without, the attached ones.
    """

    def __init__(self, root: Path, modules_dir: Path, layout: NodeLayout | None = None) -> None:
        self.root = root
        self.modules_dir = modules_dir
        self.layout = layout

    def __call__(self) -> HeartbeatRequest:
        digests, mounts = self._modules()
        return HeartbeatRequest(
            boot_id=self._read("proc/sys/kernel/random/boot_id").strip(),
            agent_version=__version__,
            running_module_digests=digests,
            mounts=mounts,
            load=self._load(),
            mem=self._mem(),
        )

    def _read(self, rel: str) -> str:
        try:
            return (self.root / rel).read_text()[:65536]
        except OSError:
            return ""

    def _load(self) -> list[float]:
        fields = self._read("proc/loadavg").split()
        try:
            return [float(x) for x in fields[:3]]
        except ValueError:
            return []

    def _mem(self) -> dict[str, int]:
        mem: dict[str, int] = {}
        for line in self._read("proc/meminfo").splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable") and rest.split():
                key = "total" if name == "MemTotal" else "available"
                mem[key] = int(rest.split()[0]) * 1024
        return mem

    def _modules(self) -> tuple[dict[str, Digest], dict[str, JSON]]:
        from powernode.agent.modules.state import StateFile  # noqa: PLC0415 - optional part

        try:
            state = StateFile(self.modules_dir).load()
        except PowernodeError as e:
            log.warning("cannot read module state for the heartbeat: %s", e)
            return {}, {}
        if self.layout is not None:
            from powernode.agent.modules.status import running_module_digests  # noqa: PLC0415

            digests = running_module_digests(self.layout)
        else:
            digests = {name: spec.digest for name, spec in state.modules.items()}
        parsed = {}
        for name, digest in digests.items():
            try:
                parsed[name] = Digest.parse(digest)
            except DataError as e:  # a hand-edited state file: report the rest
                log.warning("module %s: not reported in the heartbeat: %s", name, e)
        mounted: list[JSON] = list(state.mounted)
        return parsed, {"generation": state.generation, "mounted": mounted}
