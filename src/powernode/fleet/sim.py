"""The fleet simulator: N simulated agents in a small process pool, asyncio in each process.

Each process (a *shard*) owns ``nodes / processes`` nodes. It mints their
bootstrap tokens through the operator API (create node, provision instance,
``POST …/bootstrap_tokens``), enrolls each with its own key and certificate
(node.py: the agent's code), then runs every node's loop: a beat every
``tick`` seconds ± ``jitter``, the first one spread over one tick. The
agent's client is blocking, so an asyncio loop schedules the beats and a
bounded thread pool runs them. Every few seconds a shard sends its figures to
the parent, which prints the live table; at the end each shard returns its
totals and the parent writes the JSON summary.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import queue
import random
import shutil
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from powernode.fleet.node import NodeConfig, SimNode, Stats

OPERATOR_API = "/api/v1/system"
REPORT_SECONDS = 2.0


Echo = Callable[[str], object]


@dataclass(frozen=True)
class Report:
    """What a shard tells the live table: its enrolled count, or its last window."""

    shard: int
    enrolled: int | None = None
    window: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


class LiveQueue(Protocol):
    def put(self, item: Report) -> None: ...


@dataclass
class SimConfig:
    url: str
    platform_ca: Path
    token: str  # operator API token (scope write)
    nodes: int = 100
    minutes: float = 1.0
    tick: float = 30.0
    jitter: float = 0.1  # fraction of the tick
    processes: int = 2
    threads: int = 32  # per process: beats in flight at once
    template: str = "base"
    tasks_per_node: int = 1
    run_id: str = ""
    node: NodeConfig = field(default_factory=NodeConfig)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _operator(cfg: SimConfig) -> httpx.Client:
    return httpx.Client(
        base_url=cfg.url + OPERATOR_API,
        verify=ssl.create_default_context(cafile=str(cfg.platform_ca)),
        headers={"Authorization": f"Bearer {cfg.token}"},
        timeout=60,
    )


def _mint(op: httpx.Client, cfg: SimConfig, hostname: str) -> tuple[str, str]:
    """A node, its instance, a task or more for it, and a bootstrap token: (instance, token)."""
    body: dict[str, object] = {"hostname": hostname, "node_template_id": cfg.template}
    for attempt in range(5):  # an API process restarting under us: the operator retries too
        try:
            r = op.post("/nodes", json=body)
            if r.status_code not in (201, 409):
                r.raise_for_status()
            r = op.post("/node_instances", json={"node_id": hostname})
            r.raise_for_status()
            iid = r.json()["instance"]["id"]
            for k in range(cfg.tasks_per_node):
                op.post(
                    f"/node_instances/{iid}/tasks", json={"kind": "sim.noop", "payload": {"k": k}}
                ).raise_for_status()
            r = op.post(f"/node_instances/{iid}/bootstrap_tokens", json={"ttl_seconds": 3600})
            r.raise_for_status()
            return iid, str(r.json()["token"])
        except httpx.TransportError:
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


@dataclass
class ShardResult:
    enrolled: int
    beats: int
    rotations: int
    latencies: dict[str, list[float]]
    statuses: dict[str, dict[int, int]]
    failures: dict[str, int]
    failure_samples: list[str]
    enroll_failures: list[str]
    events_delivered: int
    event_ids: list[str]
    leased: list[tuple[str, int]]
    instance_ids: list[str]


def run_shard(cfg: SimConfig, shard: int, indices: list[int], live: LiveQueue) -> ShardResult:
    """One process's nodes, from enrollment to drain (``live``: a queue for the table)."""
    root = Path(tempfile.mkdtemp(prefix=f"powernode-fleet-{shard}-"))
    try:
        return asyncio.run(_shard(cfg, shard, indices, live, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _shard(
    cfg: SimConfig, shard: int, indices: list[int], live: LiveQueue, root: Path
) -> ShardResult:
    stats = Stats()
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=cfg.threads)
    nodes: list[SimNode] = []
    enroll_failures: list[str] = []
    op = _operator(cfg)

    def enroll_one(i: int) -> SimNode | None:
        name = f"sim-{cfg.run_id}-{i}"
        node = SimNode(name, root / name, cfg.url, cfg.platform_ca, stats, cfg.node)
        try:
            _, token = _mint(op, cfg, name)
            node.enroll(token)
        except Exception as e:
            enroll_failures.append(f"{name}: {type(e).__name__}: {e}")
            return None
        return node

    for got in await asyncio.gather(*(loop.run_in_executor(pool, enroll_one, i) for i in indices)):
        if got is not None:
            nodes.append(got)
    live.put(Report(shard, enrolled=len(nodes)))
    deadline = time.monotonic() + cfg.minutes * 60
    rng = random.Random(shard)  # noqa: S311 - jitter, not a secret

    def until_deadline(seconds: float) -> float:
        # No sleep past the end: a node's last pause would otherwise stretch the run by
        # up to a tick of idle time, which the bench counts as node-minutes served.
        return max(0.0, min(seconds, deadline - time.monotonic()))

    async def run_node(node: SimNode) -> None:
        await asyncio.sleep(until_deadline(rng.uniform(0, cfg.tick)))
        while time.monotonic() < deadline:
            await loop.run_in_executor(pool, node.beat)
            spread = cfg.tick * cfg.jitter
            await asyncio.sleep(until_deadline(cfg.tick + rng.uniform(-spread, spread)))

    async def report() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(until_deadline(REPORT_SECONDS))
            counts = {r: sum(s.values()) for r, s in stats.statuses.items()}
            live.put(Report(shard, None, stats.take_window(), counts, dict(stats.failures)))

    await asyncio.gather(report(), *(run_node(n) for n in nodes))
    await asyncio.gather(*(loop.run_in_executor(pool, n.drain) for n in nodes))
    pool.shutdown()
    op.close()
    return ShardResult(
        enrolled=len(nodes),
        beats=sum(n.beats for n in nodes),
        rotations=sum(n.rotations for n in nodes),
        latencies=dict(stats.latencies),
        statuses={r: dict(s) for r, s in stats.statuses.items()},
        failures=dict(stats.failures),
        failure_samples=stats.failure_samples,
        enroll_failures=enroll_failures,
        events_delivered=sum(n.delivered_count for n in nodes),
        event_ids=[i for n in nodes for i in n.delivered],
        leased=[x for n in nodes for x in n.leased],
        instance_ids=[n.instance_id for n in nodes],
    )


@dataclass
class Summary:
    nodes: int
    enrolled: int
    seconds: float
    beats: int
    rotations: int
    routes: dict[str, dict[str, float]]
    failures: dict[str, int]
    failure_samples: list[str]
    enroll_failures: list[str]
    events_delivered: int
    database_bytes: dict[str, int]
    event_ids: list[str] = field(default_factory=list, repr=False)
    leased: list[tuple[str, int]] = field(default_factory=list, repr=False)
    instance_ids: list[str] = field(default_factory=list, repr=False)

    @property
    def failed_requests(self) -> int:
        return sum(self.failures.values()) + len(self.enroll_failures)

    def to_json(self) -> dict[str, object]:
        doc = asdict(self)
        for bulky in ("event_ids", "leased", "instance_ids"):
            doc.pop(bulky)
        return doc


def route_figures(
    latencies: dict[str, list[float]], statuses: dict[str, dict[int, int]], seconds: float
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for route, values in sorted(latencies.items()):
        st = statuses.get(route, {})
        out[route] = {
            "requests": len(values),
            "per_second": len(values) / seconds if seconds > 0 else 0.0,
            "p50_ms": percentile(values, 0.50) * 1000,
            "p95_ms": percentile(values, 0.95) * 1000,
            "p99_ms": percentile(values, 0.99) * 1000,
            "mean_ms": statistics.fmean(values) * 1000 if values else 0.0,
            "answers_5xx_429_or_none": sum(
                n for s, n in st.items() if s == 0 or s >= 500 or s == 429
            ),
        }
    return out


class LiveTable:
    """Folds the shards' reports into one table, printed every few seconds."""

    def __init__(self, nodes: int, echo: Echo, db_size: Callable[[], int]) -> None:
        self.nodes = nodes
        self.echo = echo
        self.db_size = db_size
        self.enrolled: dict[int, int] = {}
        self.counts: dict[int, dict[str, int]] = {}
        self.failures: dict[int, dict[str, int]] = {}
        self.window: dict[str, list[float]] = {}
        self.last = time.monotonic()

    def take(self, item: Report) -> None:
        if item.enrolled is not None:
            self.enrolled[item.shard] = item.enrolled
            return
        for route, values in item.window.items():
            self.window.setdefault(route, []).extend(values)
        self.counts[item.shard], self.failures[item.shard] = item.counts, item.failures

    def print(self) -> None:
        now = time.monotonic()
        seconds, self.last = max(1e-6, now - self.last), now
        size = self.db_size()
        lines = [
            f"nodes enrolled {sum(self.enrolled.values())}/{self.nodes}"
            + (f"   database {size / 1e6:.1f} MB" if size else "")
        ]
        lines.append(
            f"  {'route':22} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'total':>8} {'errors':>6}"
        )
        routes = sorted({r for c in self.counts.values() for r in c})
        for route in routes:
            values = self.window.get(route, [])
            total = sum(c.get(route, 0) for c in self.counts.values())
            errors = sum(f.get(route, 0) for f in self.failures.values())
            lines.append(
                f"  {route:22} {len(values) / seconds:8.1f} {percentile(values, 0.5) * 1000:8.1f} "
                f"{percentile(values, 0.95) * 1000:8.1f} {percentile(values, 0.99) * 1000:8.1f} "
                f"{total:8d} {errors:6d}"
            )
        self.window = {}
        self.echo("\n".join(lines))


def simulate(
    cfg: SimConfig,
    *,
    echo: Echo = print,
    db_size: Callable[[], int] = lambda: 0,
    every: float = 10.0,
) -> Summary:
    """Run the fleet; prints the live table every ``every`` seconds; returns the totals."""
    cfg.run_id = cfg.run_id or f"{random.getrandbits(32):08x}"
    shards = max(1, min(cfg.processes, cfg.nodes))
    parts = [list(range(s, cfg.nodes, shards)) for s in range(shards)]
    ctx = multiprocessing.get_context("spawn")
    table = LiveTable(cfg.nodes, echo, db_size)
    before = db_size_dict(db_size)
    start = time.monotonic()
    with ctx.Manager() as manager:
        live = manager.Queue()
        with concurrent.futures.ProcessPoolExecutor(shards, mp_context=ctx) as pool:
            futures = [pool.submit(run_shard, cfg, s, parts[s], live) for s in range(shards)]
            next_print = time.monotonic() + every
            while not all(f.done() for f in futures):
                with contextlib.suppress(queue.Empty):
                    table.take(live.get(timeout=0.5))
                if time.monotonic() >= next_print:
                    table.print()
                    next_print = time.monotonic() + every
            results = [f.result() for f in futures]
    seconds = time.monotonic() - start
    latencies: dict[str, list[float]] = {}
    statuses: dict[str, dict[int, int]] = {}
    failures: dict[str, int] = {}
    for r in results:
        for route, values in r.latencies.items():
            latencies.setdefault(route, []).extend(values)
        for route, st in r.statuses.items():
            for code, n in st.items():
                statuses.setdefault(route, {}).setdefault(code, 0)
                statuses[route][code] += n
        for route, n in r.failures.items():
            failures[route] = failures.get(route, 0) + n
    after = db_size_dict(db_size)
    return Summary(
        nodes=cfg.nodes,
        enrolled=sum(r.enrolled for r in results),
        seconds=seconds,
        beats=sum(r.beats for r in results),
        rotations=sum(r.rotations for r in results),
        routes=route_figures(latencies, statuses, cfg.minutes * 60),
        failures=failures,
        failure_samples=[s for r in results for s in r.failure_samples][:20],
        enroll_failures=[s for r in results for s in r.enroll_failures],
        events_delivered=sum(r.events_delivered for r in results),
        database_bytes={"before": before, "after": after},
        event_ids=[i for r in results for i in r.event_ids],
        leased=[x for r in results for x in r.leased],
        instance_ids=[i for r in results for i in r.instance_ids],
    )


def db_size_dict(db_size: Callable[[], int]) -> int:
    try:
        return int(db_size())
    except Exception:
        return 0
