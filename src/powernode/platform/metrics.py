"""``GET /metrics``: the platform in Prometheus' text format (prometheus-client).

Two kinds of figures, and why:

- **This process** (counters and histograms kept in memory): request latency per
  route template, method and status class; heartbeats received and written. Each
  API process has its own; Prometheus scrapes each process (the deployment's
  targets are the processes, not the load balancer) and sums.
- **The fleet** (read from the database at scrape time): instances by status,
  instances drifting from their template, heartbeats gone stale, node
  certificates expiring, tasks and ingest jobs by state. Every process answers
  the same figures, so they are gauges to ``max()``, never to ``sum()``. The
  database reads are grouped counts, plus one desired set per template for
  drift; the whole fleet part is cached ``fleet_ttl`` seconds so a scrape every
  few seconds (or from several Prometheus replicas) costs one read per TTL.

Names follow Prometheus' conventions: ``powernode_`` prefix, base units
(seconds), ``_total`` for counters, ``_info`` for build information.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powernode import __version__
from powernode.platform.db import InstanceStatus, Node, NodeInstance
from powernode.platform.db.fleet import Task
from powernode.platform.db.ingest import ModuleIngest
from powernode.platform.db.nodeapi import NodeCertificate
from powernode.platform.db.templates import NodeTemplate
from powernode.platform.problems import PlatformError
from powernode.platform.services.context import READ, Actor, Ctx
from powernode.platform.services.desired import desired_for, node_states
from powernode.platform.services.drift import compare

if TYPE_CHECKING:
    from powernode.platform.services.nodeapi.heartbeat import HeartbeatBuffer

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

# Latency buckets: a heartbeat answers in ~1-50 ms, a desired-set read in tens of
# ms, a registration with verification in seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ENDED = (InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value)
EXPIRY_WINDOWS = (("1d", timedelta(days=1)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30)))


class Metrics:
    """One per app: its own registry, so two apps in one process never share figures."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        heartbeats: HeartbeatBuffer,
        *,
        stale_after: timedelta = timedelta(seconds=90),
        fleet_ttl: float = 10.0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram(
            "powernode_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status class.",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_FleetCollector(sessions, clock, heartbeats, stale_after, fleet_ttl))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _FleetCollector(Collector):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        heartbeats: HeartbeatBuffer,
        stale_after: timedelta,
        ttl: float,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._heartbeats = heartbeats
        self._stale_after = stale_after
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily]:
        info = InfoMetricFamily("powernode_build", "The platform's version.")
        info.add_metric([], {"version": __version__})
        yield info
        received = CounterMetricFamily(
            "powernode_heartbeats_received", "Heartbeats accepted by this process."
        )
        received.add_metric([], self._heartbeats.received)
        yield received
        written = CounterMetricFamily(
            "powernode_heartbeats_written",
            "Heartbeat reports this process wrote (several from one node coalesce into one).",
        )
        written.add_metric([], self._heartbeats.flushed)
        yield written
        yield from self._fleet()

    def _fleet(self) -> list[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._ttl:
                return self._cached[1]
            try:
                families = self._read()
            except Exception:  # a scrape must answer even when the database does not
                log.exception("metrics: cannot read the fleet's figures")
                families = [] if self._cached is None else self._cached[1]
            self._cached = (now, families)
            return families

    def _read(self) -> list[GaugeMetricFamily]:

        now = self._clock()
        by_status = GaugeMetricFamily(
            "powernode_instances", "Node instances by status.", labels=["status"]
        )
        drifting = GaugeMetricFamily(
            "powernode_instances_drifting",
            "Live instances whose running modules differ from their template's desired set.",
            labels=["template"],
        )
        stale = GaugeMetricFamily(
            "powernode_instances_heartbeat_stale",
            "Running instances with no heartbeat for longer than the stale threshold.",
        )
        expiring = GaugeMetricFamily(
            "powernode_node_certificates_expiring",
            "Unrevoked node certificates that expire within the window.",
            labels=["within"],
        )
        tasks = GaugeMetricFamily("powernode_tasks", "Tasks by state.", labels=["state"])
        ingests = GaugeMetricFamily(
            "powernode_ingest_jobs", "Module ingest jobs by state.", labels=["state"]
        )
        with self._sessions() as s:
            counts: dict[str, int] = {
                status: n
                for status, n in s.execute(
                    select(NodeInstance.status, func.count()).group_by(NodeInstance.status)
                )
            }
            for status in InstanceStatus:
                by_status.add_metric([status.value], counts.get(status.value, 0))
            stale.add_metric(
                [],
                s.scalar(
                    select(func.count()).where(
                        NodeInstance.status == InstanceStatus.RUNNING.value,
                        (NodeInstance.last_heartbeat_at.is_(None))
                        | (NodeInstance.last_heartbeat_at < now - self._stale_after),
                    )
                )
                or 0,
            )
            for label, window in EXPIRY_WINDOWS:
                n = s.scalar(
                    select(func.count()).where(
                        NodeCertificate.revoked_at.is_(None),
                        NodeCertificate.not_after > now,
                        NodeCertificate.not_after <= now + window,
                    )
                )
                expiring.add_metric([label], n or 0)
            for state, n in s.execute(select(Task.state, func.count()).group_by(Task.state)):
                tasks.add_metric([state], n)
            for state, n in s.execute(
                select(ModuleIngest.state, func.count()).group_by(ModuleIngest.state)
            ):
                ingests.add_metric([state], n)
            # Drift: one desired set per template and kind of node (what an ordinary
            # node is served, what a test node is: services/desired.node_states),
            # then each live instance's running digests against it (what the drift
            # report does for one instance).
            live = s.execute(
                select(
                    NodeInstance.template_id,
                    NodeInstance.running_module_digests,
                    Node.node_metadata,
                )
                .join(Node, Node.id == NodeInstance.node_id)
                .where(NodeInstance.status.not_in(_ENDED))
            ).all()
            wanted_by_template: dict[tuple[str, frozenset[str]], tuple[str, Wanted | None]] = {}
            per_template: dict[str, int] = {}
            for template_id, running, metadata in live:
                key = (template_id, node_states(metadata))
                if key not in wanted_by_template:
                    wanted_by_template[key] = _wanted(s, template_id, now, key[1])
                name, wanted = wanted_by_template[key]
                per_template.setdefault(name, 0)
                if wanted is None:  # unresolvable: no instance of it can be in line
                    per_template[name] += 1
                    continue
                report = compare(wanted, {str(k): str(v) for k, v in (running or {}).items()})
                if any(m.status != "ok" for m in report):
                    per_template[name] += 1
            for name, n in sorted(per_template.items()):
                drifting.add_metric([name], n)
        return [by_status, drifting, stale, expiring, tasks, ingests]


Wanted = dict[str, tuple[str | None, str]]


def _wanted(
    session: Session, template_id: str, now: datetime, states: frozenset[str]
) -> tuple[str, Wanted | None]:
    """A template's name and desired modules (name → (digest, version)), or None
    when its desired set cannot be resolved."""
    template = session.get(NodeTemplate, template_id)
    if template is None:
        return template_id, None
    actor = Actor(name="metrics", token_id=None, scopes=frozenset({READ}), account=template.account)
    try:
        desired = desired_for(Ctx(session=session, actor=actor, now=now), template, states)
    except PlatformError:
        return template.name, None
    return template.name, {m.name: (m.composefs_digest, m.version_string) for m in desired.modules}


class MetricsMiddleware:
    """Times every HTTP request by its route template (``/node_modules/{name}``),
    never by its raw path: one series per route, however many modules exist."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        seen = StatusSeen(send)
        try:
            await self.app(scope, receive, seen)
        finally:
            self.metrics.requests.labels(
                route_template(scope), scope["method"], seen.label
            ).observe(time.perf_counter() - start)


class StatusSeen:
    """An ASGI ``send`` that remembers the response's status class for the histogram
    (``5xx`` until a response starts: an exception before it is a server error)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)

    @property
    def label(self) -> str:
        return f"{self.status // 100}xx"


def route_template(scope: Scope) -> str:
    """The matched route's path template with its router prefix, or ``unmatched``.

    FastAPI >= 0.160 keeps an included router's routes unprefixed and records the
    effective (prefixed) path in ``scope["fastapi"]``; older ones prefixed
    ``scope["route"].path`` itself.
    """
    effective = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(effective, "path", None) or getattr(scope.get("route"), "path", None)
    return str(path) if path else "unmatched"
