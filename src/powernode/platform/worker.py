"""The ingest worker: poll registries, verify queued tags, run the sensors.

One round (:meth:`IngestWorker.run_once`):

1. **poll**: for every module, list its repository's tags and queue each SemVer
   tag that has neither an ingest row nor a version (seed 003's
   ``ModuleOciIngestService``: "when a new tag appears");
2. **process**: claim queued tags (and failed ones due for a retry, and
   running ones whose worker vanished) with a compare-and-set UPDATE, so two
   workers (``platform serve`` in-process and ``platform worker``) never
   ingest one tag twice; verify each *outside* any transaction (registry I/O),
   then record built / rejected / failed;
3. **sensors**: the staging sensor.

The loop (:meth:`run`) repeats every ``poll_seconds`` or sooner when a
webhook calls :meth:`wake`; every step is bounded in count.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fastapi import FastAPI
from sqlalchemy import CursorResult, Engine, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from powernode.errors import ConfigError, DataError, PowernodeError, TransportError
from powernode.platform.db import IngestState, ModuleIngest, NodeModule, NodeModuleVersion
from powernode.platform.services import ingest, retention, rollout_tick, sensors
from powernode.platform.services.artifacts import ArtifactSource, IngestedArtifact
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.retention import RetentionPolicy
from powernode.platform.settings import Settings
from powernode.systemd import Notifier

log = logging.getLogger(__name__)
S = IngestState


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RoundReport:
    queued: int = 0
    built: int = 0
    rejected: int = 0
    failed: int = 0
    warnings: int = 0
    rollouts: int = 0  # rollouts advanced (services/rollout_tick.py)
    purged: int = 0  # rows deleted by retention (services/retention.py)


@dataclass(frozen=True)
class WorkerLimits:
    max_attempts: int = 5
    retry_after: timedelta = timedelta(minutes=1)
    lease: timedelta = timedelta(minutes=10)  # a running ingest older than this is retaken
    jobs_per_round: int = 100
    modules_per_round: int = 10_000
    tags_per_module: int = 1000
    staging_max_age: timedelta = sensors.STAGING_MAX_AGE


class IngestWorker:
    """Runs ingest rounds on ``sessions``; ``source`` None means no registry is configured."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        source: ArtifactSource | None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        poll_seconds: float = 60.0,
        limits: WorkerLimits = WorkerLimits(),
        name: str | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.retention = retention
        self.source = source
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.limits = limits
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one round ---------------------------------------------------------------

    def run_once(self) -> RoundReport:
        report = RoundReport()
        if self.source is not None:
            report.queued = self.poll()
        for job_id in self.claim():
            outcome = self.process(job_id)
            setattr(report, outcome, getattr(report, outcome) + 1)
        with self.sessions.begin() as s:
            report.warnings = len(
                sensors.staging_sensor(s, self.clock(), self.limits.staging_max_age)
            )
        with self.sessions.begin() as s:
            actor = Actor("platform:rollouts", None, frozenset())
            report.rollouts = rollout_tick.tick(Ctx(s, actor, self.clock()))
        if self.retention is not None:
            engine: Engine = self.sessions.kw["bind"]
            report.purged = sum(retention.purge(engine, self.retention, self.clock()).values())
        return report

    def poll(self) -> int:
        """Queue every new SemVer tag of every module; returns how many were queued."""
        assert self.source is not None
        with self.sessions() as s:
            modules = s.scalars(
                select(NodeModule).order_by(NodeModule.id).limit(self.limits.modules_per_round)
            ).all()
            targets = [(m.id, m.account, ingest.module_repository(m)) for m in modules]
        queued = 0
        for module_id, account, repository in targets:
            try:
                tags = self.source.list_tags(repository)[: self.limits.tags_per_module]
            except (PowernodeError, OSError) as e:
                log.warning("cannot list tags of %s: %s", repository, e)
                continue
            queued += self._queue_new(module_id, account, tags)
        return queued

    def _queue_new(self, module_id: str, account: str, tags: list[str]) -> int:
        with self.sessions.begin() as s:
            module = s.get(NodeModule, module_id)
            if module is None:  # deleted meanwhile
                return 0
            seen = set(
                s.scalars(select(ModuleIngest.tag).where(ModuleIngest.module_id == module_id))
            )
            versions = set(
                s.scalars(
                    select(NodeModuleVersion.version_string).where(
                        NodeModuleVersion.module_id == module_id
                    )
                )
            )
            ctx = Ctx(s, ingest.worker_actor(account, "ingest-poller"), self.clock())
            n = 0
            for tag in tags:
                v = ingest.tag_version(tag)
                if v is None or tag in seen or str(v) in versions:
                    continue
                ingest.queue_ingest(ctx, module, tag, "poller")
                n += 1
            return n

    def claim(self) -> list[str]:
        """Take due ingests for this worker (compare-and-set on state and updated_at)."""
        now = self.clock()
        lim = self.limits
        with self.sessions() as s:
            rows = s.execute(
                select(ModuleIngest.id, ModuleIngest.state, ModuleIngest.updated_at)
                .where(
                    or_(
                        ModuleIngest.state == S.QUEUED.value,
                        and_(
                            ModuleIngest.state == S.FAILED.value,
                            ModuleIngest.attempts < lim.max_attempts,
                            ModuleIngest.updated_at <= now - lim.retry_after,
                        ),
                        and_(
                            ModuleIngest.state == S.RUNNING.value,
                            ModuleIngest.updated_at <= now - lim.lease,
                        ),
                    )
                )
                .order_by(ModuleIngest.created_at, ModuleIngest.id)
                .limit(lim.jobs_per_round)
            ).all()
        claimed = []
        for job_id, state, updated_at in rows:
            with self.sessions.begin() as s:
                r = cast(
                    CursorResult[Any],
                    s.execute(
                        update(ModuleIngest)
                        .where(
                            ModuleIngest.id == job_id,
                            ModuleIngest.state == state,
                            ModuleIngest.updated_at == updated_at,
                        )
                        .values(
                            state=S.RUNNING.value,
                            worker=self.name,
                            attempts=ModuleIngest.attempts + 1,
                            updated_at=now,
                        )
                        .execution_options(synchronize_session=False)
                    ),
                )
                if r.rowcount == 1:
                    claimed.append(job_id)
        return claimed

    def process(self, job_id: str) -> str:
        """Verify one claimed ingest and record the outcome: built, rejected or failed."""
        with self.sessions() as s:
            job = s.get(ModuleIngest, job_id)
            if job is None:
                return "failed"
            module = job.module
            repository, tag = ingest.module_repository(module), job.tag
            trust = ingest.trust_of(module)
            name = module.name
        artifact: IngestedArtifact | None = None
        rejected: str | None = None
        failed: str | None = None
        if not trust.configured:
            rejected = (
                f"module {name} has no trust policy: set cosign_public_key, or "
                "cosign_identity_regexp and cosign_issuer_regexp, then retry the ingest"
            )
        elif self.source is None:
            failed = "no registry is configured (settings: registry); set it and retry"
        else:
            try:
                artifact = self.source.verify(repository, tag, trust)
            except DataError as e:  # the artifact itself is wrong: never retried
                rejected = f"{repository}:{tag} failed verification against {trust.describe()}: {e}"
            except (TransportError, ConfigError, OSError) as e:
                failed = f"{repository}:{tag}: {e}"
            except Exception as e:  # a bug in an adapter must not stop the worker
                log.exception("verifying %s:%s", repository, tag)
                failed = f"{repository}:{tag}: unexpected {type(e).__name__}: {e}"
        return self._record(job_id, artifact, rejected, failed)

    def _record(
        self,
        job_id: str,
        artifact: IngestedArtifact | None,
        rejected: str | None,
        failed: str | None,
    ) -> str:
        with self.sessions.begin() as s:
            job = s.get(ModuleIngest, job_id)
            if job is None or job.state != S.RUNNING.value or job.worker != self.name:
                log.info("ingest %s was taken over by another worker", job_id)
                return "failed"
            ctx = Ctx(s, ingest.worker_actor(job.module.account), self.clock())
            if artifact is not None:
                try:
                    with s.begin_nested():
                        ingest.record_built(ctx, job, artifact)
                    return "built"
                except DataError as e:
                    rejected = str(e)
            if rejected is not None:
                ingest.record_rejected(ctx, job, rejected)
                return "rejected"
            ingest.record_failed(ctx, job, failed or "unknown failure", ctx.now)
            return "failed"

    # --- the loop ----------------------------------------------------------------

    def wake(self) -> None:
        """Start the next round now (a webhook queued something)."""
        self._wake.set()

    def run(
        self,
        stop: threading.Event | None = None,
        max_rounds: int | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """Rounds until ``stop`` is set (or ``max_rounds``); errors are logged, not raised.

        With a ``notifier`` (``platform worker`` under systemd): READY after the first
        round, the watchdog pinged from this loop, waking in time to ping however long
        the poll interval is."""
        stop = stop or self._stop
        notify = notifier or Notifier({})
        rounds = 0
        while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
            self._wake.clear()
            notify.watchdog()
            try:
                report = self.run_once()
                log.info("ingest round: %s", report)
                notify.status(f"ingest round {rounds + 1}: {report}")
            except Exception:
                log.exception("ingest round failed; retrying in %.0f s", self.poll_seconds)
                notify.status(f"ingest round {rounds + 1} failed; see the log")
            if rounds == 0:
                notify.ready()
            rounds += 1
            deadline = time.monotonic() + self.poll_seconds
            while not stop.is_set() and not self._wake.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                slice_ = (
                    left
                    if notify.watchdog_interval is None
                    else min(left, notify.watchdog_interval / 2)
                )
                self._wake.wait(slice_)
                notify.watchdog()
        notify.stopping()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="ingest-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def worker_from_settings(settings: Settings, sessions: sessionmaker[Session]) -> IngestWorker:
    """The worker ``platform serve`` and ``platform worker`` run: the settings' registry
    (verified under each module's trust policy), poll interval and retention."""
    from powernode.platform.services.artifacts import PublishArtifactSource  # noqa: PLC0415

    source = None
    if settings.registry:
        source = PublishArtifactSource.from_settings(
            settings.registry,
            settings.cosign_roots_file,
            lambda: datetime.now(UTC),
            settings.cosign_tlog_keys_file,
            insecure_ignore_tlog=settings.cosign_insecure_ignore_tlog,
        )
    return IngestWorker(
        sessions,
        source,
        poll_seconds=settings.ingest_poll_seconds,
        retention=RetentionPolicy.from_settings(settings),
    )


def attach(app: FastAPI, worker: IngestWorker) -> None:
    """Run ``worker`` in a thread for the app's lifetime (``platform serve``)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> Any:  # Any: Starlette's lifespan state, None or a mapping
        async with inner(a) as st:
            worker.start()
            try:
                yield st
            finally:
                worker.stop()

    app.router.lifespan_context = lifespan
    app.state.ingest_worker = worker
