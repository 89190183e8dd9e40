"""One simulated node: the real agent's client, enrollment and rotation, driven like its runtime.

What runs is the agent's own code: :class:`~powernode.agent.transport.NodeClient`
(with its retry policy), :func:`~powernode.agent.enroll.enroll` into a real
:class:`~powernode.agent.certstore.CertStore`, and :func:`~powernode.agent.rotation.rotate`
when :func:`~powernode.agent.rotation.rotation_due` (or, to see rotations in a
run of minutes, when ``rotate_every`` seconds have passed). A beat follows
``Runtime._beat``: outcomes, rotation, heartbeat, lease, outcomes, events, and
the desired set (``GET /node_api/modules``) every ``modules_seconds``.
Events and outcomes stay pending until the platform took them, as the
agent's spool keeps them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx

from powernode.agent.certstore import CertStore, rfc3339
from powernode.agent.enroll import enroll
from powernode.agent.rotation import rotate, rotation_due
from powernode.agent.transport import NodeClient, tls_context
from powernode.errors import PowernodeError
from powernode.node.fields import JSON
from powernode.node.records import Event, HeartbeatRequest, Outcome

T = TypeVar("T")


def route_of(path: str) -> str:
    """``/node_api/tasks/ID/ack`` → ``tasks/ack``: one row per endpoint."""
    parts = path.split("?", 1)[0].removeprefix("/node_api/").removeprefix("/api/v1/system/")
    segs = parts.split("/")
    if segs[0] in {"tasks", "node_instances"} and len(segs) == 3:
        return f"{segs[0]}/{segs[2]}"
    return parts


class Stats:
    """Every HTTP attempt (route, status, seconds) and every failed client call; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.window: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: dict[str, int] = defaultdict(int)
        self.failure_samples: list[str] = []

    def record(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.latencies[route].append(seconds)
            self.window[route].append(seconds)
            self.statuses[route][status] += 1

    def failed(self, route: str, error: BaseException) -> None:
        with self._lock:
            self.failures[route] += 1
            if len(self.failure_samples) < 20:
                self.failure_samples.append(f"{route}: {error}")

    def take_window(self) -> dict[str, list[float]]:
        with self._lock:
            out, self.window = dict(self.window), defaultdict(list)
        return out


class TimingTransport(httpx.BaseTransport):
    """The agent's HTTP transport, timing every attempt (status 0: no answer)."""

    def __init__(self, inner: httpx.BaseTransport, stats: Stats) -> None:
        self.inner = inner
        self.stats = stats

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route = route_of(request.url.path)
        start = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
            response.read()
        except Exception:
            self.stats.record(route, 0, time.perf_counter() - start)
            raise
        self.stats.record(route, response.status_code, time.perf_counter() - start)
        return response

    def close(self) -> None:
        self.inner.close()


@dataclass
class NodeConfig:
    # An agent in steady state sends few events of its own (task outcomes, rotations,
    # module and drift changes): one every five beats unless a run says otherwise.
    events_per_beat: float = 0.2
    lease_max: int = 4  # the agent's default (agent/config.py)
    modules_seconds: float = 60.0  # the agent's modules_sync_seconds default
    rotate_every: float = 0.0  # seconds; 0: only when the certificate is 75 % through its life
    collect_ids: bool = True


@dataclass
class SimNode:
    """One node's identity on disk, its client and what it has sent."""

    name: str
    pki: Path
    url: str
    platform_ca: Path
    stats: Stats
    config: NodeConfig
    client: NodeClient | None = None
    instance_id: str = ""
    beats: int = 0
    event_credit: float = 0.0
    next_modules: float = 0.0
    rotations: int = 0
    rotated_at: float = 0.0
    pending_events: list[Event] = field(default_factory=list)
    pending_outcomes: list[Outcome] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    delivered_count: int = 0
    leased: list[tuple[str, int]] = field(default_factory=list)

    @property
    def store(self) -> CertStore:
        return CertStore(self.pki)

    def _client(self, with_cert: bool) -> NodeClient:
        store = self.store
        if with_cert:
            tls = tls_context(self.platform_ca, store.cert, store.key)
        else:
            tls = tls_context(self.platform_ca)
        inner = httpx.HTTPTransport(verify=tls, limits=httpx.Limits(max_connections=2))
        return NodeClient(self.url, tls=tls, transport=TimingTransport(inner, self.stats))

    def enroll(self, token: str) -> None:
        """The agent's enrollment: a key made here, a CSR, the certificate installed."""
        self.store.ensure_dir()
        with self._client(with_cert=False) as client:
            info = enroll(
                self.store,
                client,
                token,
                platform_ca_pem=self.platform_ca.read_bytes(),
                now=datetime.now(UTC),
                instance_hint="",  # the token names the instance
            )
        self.instance_id = info.instance_id
        self.client = self._client(with_cert=True)
        self.rotated_at = time.monotonic()

    def _call(self, route: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except PowernodeError as e:
            self.stats.failed(route, e)
            return None

    def beat(self) -> None:
        """One cycle of the agent's loop (``Runtime._beat``)."""
        assert self.client is not None
        self._report_outcomes()
        self._maybe_rotate()
        client = self.client
        facts = HeartbeatRequest(boot_id=self.name, agent_version="sim", load=[0.1, 0.1, 0.1])
        if self._call("status/heartbeat", lambda: client.heartbeat(facts)) is None:
            return
        self.beats += 1
        tasks = self._call("tasks/lease", lambda: client.lease(self.config.lease_max)) or []
        for task in tasks:
            self.leased.append((task.id, task.attempt))
            self.pending_outcomes.append(
                Outcome(id=task.id, outcome="ack", result={}, attempt=task.attempt)
            )
            self._event("task.completed", {"task_id": task.id, "kind": task.kind})
        self._report_outcomes()
        self.event_credit += self.config.events_per_beat
        while self.event_credit >= 1.0:
            self.event_credit -= 1.0
            self._event("sim.tick", {"beat": self.beats})
        self._flush_events()
        if time.monotonic() >= self.next_modules:
            self.next_modules = time.monotonic() + self.config.modules_seconds
            self._call("modules", client.modules)

    def _event(self, kind: str, payload: dict[str, JSON]) -> None:
        now = rfc3339(datetime.now(UTC))
        self.pending_events.append(
            Event(
                id=str(uuid.uuid4()), kind=kind, severity="info", occurred_at=now, payload=payload
            )
        )

    def _flush_events(self) -> None:
        assert self.client is not None
        client, batch = self.client, self.pending_events[:500]
        if batch and self._call("events", lambda: client.post_events(batch)) is not None:
            del self.pending_events[: len(batch)]
            self.delivered_count += len(batch)
            if self.config.collect_ids:
                self.delivered.extend(e.id for e in batch)

    def _report_outcomes(self) -> None:
        assert self.client is not None
        client, batch = self.client, self.pending_outcomes[:100]
        if batch and self._call("tasks/outcomes", lambda: client.outcomes(batch)) is not None:
            del self.pending_outcomes[: len(batch)]

    def _maybe_rotate(self) -> None:
        assert self.client is not None
        info = self.store.info()
        if info is None:
            return
        now = datetime.now(UTC)
        every = self.config.rotate_every
        aged = every > 0 and time.monotonic() - self.rotated_at >= every
        if not (aged or rotation_due(info, now)):
            return
        client = self.client
        if self._call("certificates/rotate", lambda: rotate(self.store, client, now)) is None:
            return
        self.rotations += 1
        self.rotated_at = time.monotonic()
        self.client.close()
        self.client = self._client(with_cert=True)
        self._event("system.cert.rotated", {"instance_id": self.instance_id})

    def drain(self) -> None:
        """Before stopping: report what is pending (the agent's drain)."""
        if self.client is None:
            return
        for _ in range(3):
            if not (self.pending_outcomes or self.pending_events):
                break
            self._report_outcomes()
            self._flush_events()
        self.client.close()
