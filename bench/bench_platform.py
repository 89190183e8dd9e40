"""Benchmark: operator reads under load, on SQLite and on PostgreSQL.

Run: .venv/bin/python bench/bench_platform.py [--requests N] [--concurrency C]

Starts the platform (uvicorn on 127.0.0.1, one process) on each database,
seeds a template ``base`` of 30 modules (each one version, 200 files, blessed)
with 20 running instances reporting digests, then fires ``--requests`` reads
per endpoint from ``--concurrency`` concurrent clients:

- GET /node_modules/{m}/versions       (list versions)
- GET /node_instances/{id}/drift       (drift report: resolve + compose 30 modules)
- GET /node_templates/base/drift       (drift of all 20 instances, one composition)
- GET /healthz                         (reference: the same server with no database work)

Prints requests/s and p50/p99 latency per endpoint, and the ratio of each
endpoint's requests/s to the reference in the same run. PostgreSQL is a
throw-away cluster (tests/platform/pgcluster.py); skipped when not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import select, update
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.platform import pgcluster

from powernode.platform.app import create_app
from powernode.platform.db import NodeInstance, NodeModule, NodeModuleVersion
from powernode.platform.db.migrate import upgrade
from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings

MODULES = 30
FILES = 200
INSTANCES = 20
API = "/api/v1/system"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(url: str, data: Path) -> Iterator[tuple[str, str]]:
    engine = make_engine(url)
    upgrade(engine)
    with Session(engine) as s:
        ctx = Ctx(s, Actor("bench", None, frozenset(SCOPES)), datetime.now(UTC))
        token = create_token(ctx, "bench", list(SCOPES))[1]
        s.commit()
    engine.dispose()
    app = create_app(Settings(data_dir=data, database_url=url, migrate_on_start=False))
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("uvicorn did not start within 20 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.should_exit = True
        thread.join(20)
        app.state.platform.engine.dispose()


def seed(c: httpx.Client, db_url: str) -> tuple[list[str], list[str]]:
    """30 blessed modules assigned to base, 20 instances; returns module names, instance ids."""
    names = [f"mod-{i:02d}" for i in range(MODULES)]
    for i, name in enumerate(names):
        cat = "system-base" if i == 0 else "userland"
        c.post(f"{API}/node_modules", json={"name": name, "category_slug": cat}).raise_for_status()
        files = ["/etc/", f"/etc/{name}/"] + [f"/etc/{name}/f{j}.conf" for j in range(FILES - 3)]
        files.append("/etc/shared.conf")  # one path everyone ships: a real union decision
        body = {
            "version_string": "1.0.0",
            "manifest": {
                "name": name,
                "dependencies": {"requires": [] if i == 0 else ["powernode/mod-00@^1"]},
            },
            "file_list": files,
        }
        r = c.post(f"{API}/node_modules/{name}/versions", json=body)
        r.raise_for_status()
        vid = r.json()["version"]["id"]
        # Ordinary nodes run live versions only (docs/platform.md, issue 13 item 2).
        for to in ("staging", "blessed", "live"):
            c.post(f"{API}/node_module_versions/{vid}/promote", json={"to": to}).raise_for_status()
        c.post(f"{API}/node_templates/base/assignments", json={"module_name": name})
    ids = []
    for n in range(INSTANCES):
        host = f"node-{n:02d}"
        c.post(f"{API}/nodes", json={"hostname": host, "node_template_id": "base"})
        r = c.post(f"{API}/node_instances", json={"node_id": host})
        r.raise_for_status()
        ids.append(r.json()["instance"]["id"])
    running = {name: f"sha256:{i:064x}" for i, name in enumerate(names)}
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(update(NodeInstance).values(running_module_digests=running))
        # What ingest records after verifying each artifact (not settable through the API).
        for i, name in enumerate(names):
            conn.execute(
                update(NodeModuleVersion)
                .where(
                    NodeModuleVersion.module_id
                    == select(NodeModule.id).where(NodeModule.name == name).scalar_subquery()
                )
                .values(composefs_digest=f"sha256:{i:064x}", cosign_verified=True)
            )
    engine.dispose()
    return names, ids


async def load(base: str, token: str, paths: list[str], concurrency: int) -> list[float]:
    """GET each path once, ``concurrency`` at a time; returns each request's latency (s)."""
    latencies: list[float] = []
    queue = list(reversed(paths))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:

        async def client() -> None:
            while queue:
                path = queue.pop()
                t = time.perf_counter()
                r = await c.get(path)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise SystemExit(f"GET {path}: {r.status_code} {r.text[:300]}")

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def measure(
    base: str, token: str, paths: list[str], concurrency: int
) -> tuple[float, float, float]:
    t = time.perf_counter()
    lat = sorted(asyncio.run(load(base, token, paths, concurrency)))
    wall = time.perf_counter() - t
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return len(lat) / wall, p(0.50), p(0.99)


def run(label: str, db_url: str, data: Path, n: int, concurrency: int) -> None:
    with serve(db_url, data) as (base, token):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            names, ids = seed(c, db_url)
            assert c.get(f"{API}/node_instances/{ids[0]}/drift").json()["drift"] is False
        cases = {
            "healthz (reference)": ["/healthz"] * n,
            "list versions": [
                f"{API}/node_modules/{names[i % MODULES]}/versions" for i in range(n)
            ],
            "instance drift (30 modules)": [
                f"{API}/node_instances/{ids[i % INSTANCES]}/drift" for i in range(n)
            ],
            "template drift (20 instances)": [f"{API}/node_templates/base/drift"] * max(1, n // 4),
        }
        ref = 0.0
        print(
            f"\n{label}: {MODULES} modules x {FILES} files, {INSTANCES} instances, "
            f"concurrency {concurrency}"
        )
        print(f"  {'endpoint':32} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'vs ref':>8}")
        for name, paths in cases.items():
            rps, p50, p99 = measure(base, token, paths, concurrency)
            ref = ref or rps
            print(f"  {name:32} {rps:9.1f} {p50:9.1f} {p99:9.1f} {rps / ref:8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run("SQLite", f"sqlite:///{root / 'platform.db'}", root, args.requests, args.concurrency)
        bindir = pgcluster.find_bindir()
        if bindir is None:
            print("\nPostgreSQL: skipped (not installed)")
            return
        with pgcluster.temp_cluster(bindir) as server:
            url = pgcluster.create_database(server, "bench")
            run("PostgreSQL", url, root, args.requests, args.concurrency)


if __name__ == "__main__":
    main()
