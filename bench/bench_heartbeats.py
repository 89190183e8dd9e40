"""Benchmark: node heartbeats over mTLS against one platform process on PostgreSQL.

Run: .venv/bin/python bench/bench_heartbeats.py [--agents N] [--seconds S]

A throw-away PostgreSQL cluster (tests/platform/pgcluster.py), the platform
served by ONE uvicorn process over mTLS (bench/_nodeload.py), N agents
enrolled through POST /node_api/enroll, each an httpx.AsyncClient in this
process with its own certificate and one keep-alive connection, posting
heartbeats back to back for S seconds (closed loop). Then the same clients
post the same body to a bare Starlette endpoint mounted in the same server
(the reference). Prints requests/s, p50 and p99 latency, the ratio to the
reference and the CPU (cores) used by the server and by the clients.
Targets: >= 1,000 heartbeats/s with p99 <= 100 ms (issue 6); >= 0.6 of the
bare endpoint's rate (issue 19).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.platform import pgcluster

from _nodeload import (
    BARE,
    HEADER,
    Agent,
    Platform,
    Stats,
    client_for,
    create_instances,
    enroll,
    measure,
    platform_process,
    raw_client_for,
    require_durable,
)

BODY = {
    "boot_id": "8d7f5a52-0c1b-4f7e-9a53-1f5a2b3c4d5e",
    "agent_version": "0.1.0",
    "running_module_digests": {"base": "sha256:" + "ab" * 32, "tools": "sha256:" + "cd" * 32},
    "mounts": {"/": "composefs"},
    "load": [0.12, 0.08, 0.05],
    "mem": {"total": 8_000_000_000, "available": 6_500_000_000},
}


async def _load(
    platform: Platform, agents: list[Agent], seconds: float, raw: bool
) -> tuple[Stats, Stats]:
    make = raw_client_for if raw else client_for
    clients = [make(platform, a) for a in agents]
    body = json.dumps(BODY).encode()

    async def via_httpx(c: httpx.AsyncClient, path: str) -> tuple[int, bytes]:
        r = await c.post(path, content=body, headers={"content-type": "application/json"})
        return r.status_code, r.content

    post = (lambda c, path: c.post(path, body)) if raw else via_httpx

    def heartbeat(c: Any) -> Awaitable[tuple[int, bytes]]:
        return post(c, "/node_api/status/heartbeat")

    def bare(c: Any) -> Awaitable[tuple[int, bytes]]:
        return post(c, BARE)

    try:
        await measure("warm-up", platform, clients, heartbeat, seconds=1.0)  # TLS handshakes
        hb = await measure("heartbeat", platform, clients, heartbeat, seconds=seconds)
        ref = await measure("bare Starlette (reference)", platform, clients, bare, seconds=seconds)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return hb, ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    bindir = pgcluster.find_bindir()
    if bindir is None:
        print("PostgreSQL not installed: skipped")
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        pgcluster.temp_cluster(bindir, durable=True) as server,
    ):
        root = Path(tmp)
        url = pgcluster.create_database(server, "bench")
        durable = require_durable(url)
        with platform_process(url, root / "data") as platform:
            ids = create_instances(platform, args.agents, "hb")
            agents = enroll(platform, ids, root / "agents")
            results = {
                kind: uvloop.run(_load(platform, agents, args.seconds, raw=kind == "raw"))
                for kind in ("raw", "httpx")
            }
        for kind, (hb, ref) in results.items():
            client = (
                "a minimal HTTP/1.1 client (the server's capacity)"
                if kind == "raw"
                else "httpx.AsyncClient (its CPU cost shows in cli cpu)"
            )
            print(
                f"\nheartbeats: {args.agents} agents, mTLS, keep-alive, {args.seconds:.0f} s, "
                f"one uvicorn process, PostgreSQL ({durable}); "
                f"client: {client}"
            )
            print(HEADER)
            print(ref.line())
            print(hb.line(ref))
            ratio = hb.rate / ref.rate
            print(
                f"  target ratio to bare Starlette >= 0.6 (issue 19): "
                f"{'met' if ratio >= 0.6 else 'NOT met'} ({ratio:.3f})"
            )
            ok = hb.rate >= 1000 and hb.pct(0.99) <= 100
            print(
                f"  target >= 1,000/s and p99 <= 100 ms: {'met' if ok else 'NOT met'} "
                f"({hb.rate:.0f}/s, p99 {hb.pct(0.99):.1f} ms)"
            )


if __name__ == "__main__":
    main()
