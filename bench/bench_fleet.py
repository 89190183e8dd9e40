"""Benchmark: the fleet simulator against the scaled deployment (issue 19).

Run: .venv/bin/python bench/bench_fleet.py [--nodes 10000] [--minutes 10] [--tick 30]
     [--apis 3] [--workers 2] [--processes 2] [--json out.json]

A throw-away PostgreSQL with its durable defaults (fsync, synchronous_commit
and full_page_writes on), 3 ``platform serve --no-worker`` and 2 ``platform
worker`` behind haproxy in TCP mode (powernode.fleet.cluster), and the
simulator (powernode.fleet.sim: the agent's own client per node) on the same
host. The steady state starts when every node is enrolled; from there to the
end it measures the server processes' CPU from /proc (utime + stime) and the
database's size. Prints requests/s per route, p50/p99, errors, server
CPU-seconds per 1,000 node-minutes and database growth per node per day.

Reference in the same run: the offered load, ``nodes / tick`` beats per
second; each route's rate is printed as a ratio to it (1.00: the deployment
kept up with every node's tick), and heartbeat p99 against its 200 ms target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.platform import pgcluster

from powernode.fleet.cluster import Cluster, cpu_seconds
from powernode.fleet.node import NodeConfig
from powernode.fleet.sim import SimConfig, simulate
from powernode.platform.db.migrate import upgrade
from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token

HEARTBEAT_P99_TARGET_MS = 200.0


def _size(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def _enrolled(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM node_instances WHERE cert_serial IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--tick", type=float, default=30.0)
    ap.add_argument("--apis", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2, help="simulator processes")
    ap.add_argument("--threads", type=int, default=32, help="beats in flight per process")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bindir = pgcluster.find_bindir()
    if bindir is None:
        print("PostgreSQL is not installed (scripts/install-system-deps.sh test)")
        return 2
    with (
        tempfile.TemporaryDirectory() as tmp,
        pgcluster.temp_cluster(bindir, durable=True) as server,
    ):
        url = pgcluster.create_database(server, "fleet")
        engine = make_engine(url)
        upgrade(engine)
        with Session(engine) as s:
            ctx = Ctx(s, Actor("bench", None, frozenset(SCOPES)), datetime.now(UTC))
            token = create_token(ctx, "bench", ["write"])[1]
            s.commit()
        engine.dispose()
        with psycopg.connect(server + "/postgres") as conn:
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('fsync', 'synchronous_commit', 'full_page_writes')"
                ).fetchall()
            )
        print(f"PostgreSQL: {settings}")
        cluster = Cluster(url, Path(tmp) / "data", apis=args.apis, workers=args.workers)
        with cluster:
            cfg = SimConfig(
                cluster.url,
                cluster.platform_ca,
                token,
                nodes=args.nodes,
                minutes=args.minutes,
                tick=args.tick,
                processes=args.processes,
                threads=args.threads,
                node=NodeConfig(collect_ids=False),
            )
            steady: dict[str, float] = {}

            def watch() -> None:
                while _enrolled(url) < args.nodes and time.monotonic() < give_up:
                    time.sleep(1)
                steady.update(
                    t=time.monotonic(), cpu=cpu_seconds(cluster.server_pids()), size=_size(url)
                )

            give_up = time.monotonic() + 3600
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            summary = simulate(cfg, db_size=lambda: _size(url), every=30)
            end = {"t": time.monotonic(), "cpu": cpu_seconds(cluster.server_pids())}
            end["size"] = _size(url)
    if not steady:
        print("the nodes never all enrolled; no steady-state figures")
        return 1
    minutes = (end["t"] - steady["t"]) / 60
    node_minutes = args.nodes * minutes
    cpu_per_1000 = (end["cpu"] - steady["cpu"]) / node_minutes * 1000 if node_minutes else 0.0
    growth = (end["size"] - steady["size"]) / args.nodes / (minutes / (24 * 60)) if minutes else 0.0
    offered = args.nodes / args.tick
    print(
        f"\n{args.nodes} nodes, tick {args.tick:g} s, {args.minutes:g} min; "
        f"{args.apis} API processes, {args.workers} workers, haproxy (TCP); steady state "
        f"{minutes:.1f} min"
    )
    print(
        f"  {'route':22} {'req/s':>8} {'÷offered':>8} {'p50 ms':>8} {'p99 ms':>8} {'5xx/none':>8}"
    )
    for route, fig in summary.routes.items():
        print(
            f"  {route:22} {fig['per_second']:8.1f} {fig['per_second'] / offered:8.2f} "
            f"{fig['p50_ms']:8.1f} {fig['p99_ms']:8.1f} {int(fig['answers_5xx_429_or_none']):8d}"
        )
    hb = summary.routes.get("status/heartbeat", {}).get("p99_ms", 0.0)
    print(f"  failed node requests (after the agent's retries): {summary.failed_requests}")
    print(
        f"  heartbeat p99 {hb:.1f} ms = {hb / HEARTBEAT_P99_TARGET_MS:.2f} of the "
        f"{HEARTBEAT_P99_TARGET_MS:.0f} ms target"
    )
    print(f"  server CPU-seconds per 1,000 node-minutes: {cpu_per_1000:.2f}")
    print(f"  database growth per node per day: {growth / 1024:.1f} KiB")
    if args.json is not None:
        doc = summary.to_json() | {
            "cpu_seconds_per_1000_node_minutes": cpu_per_1000,
            "db_bytes_per_node_per_day": growth,
            "steady_minutes": minutes,
            "postgresql": settings,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if summary.failed_requests == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
