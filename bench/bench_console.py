"""Benchmark: the operator console's pages at fleet scale, beside the REST API.

Run: .venv/bin/python bench/bench_console.py [--instances N] [--versions N] [--requests N]

A throw-away PostgreSQL cluster (tests/platform/pgcluster.py) holds 10,000
instances (of 10,000 nodes on template ``base``) and 1,000 module versions (100
modules x 10); the platform runs under uvicorn on 127.0.0.1. Each page is fetched
``--requests`` times, one at a time (latency, not throughput), logged in through
the console's own login form; beside each, the REST call that reads the same
thing. Prints p50/p95 per page and the ratio of its p95 to the REST call's.
The bootstrap tokens (one per instance) and webhook deliveries (one per version,
with its ingest) are inserted in bulk too. Target: every page p95 <= 200 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_platform import API, serve
from tests.platform import pgcluster

from powernode.platform.db import BootstrapToken, Node, NodeInstance
from powernode.platform.db.base import new_id
from powernode.platform.db.catalog import NodeModule
from powernode.platform.db.ingest import ModuleIngest, WebhookDelivery
from powernode.platform.db.session import make_engine
from powernode.platform.db.templates import NodeTemplate

TARGET_MS = 200.0


def seed(c: httpx.Client, db_url: str, instances: int, versions: int) -> tuple[str, str]:
    """Modules and versions through the API; nodes and instances in bulk. Returns a
    module name and an instance id to read."""
    modules = max(1, versions // 10)
    for m in range(modules):
        name = f"mod-{m:03d}"
        c.post(f"{API}/node_modules", json={"name": name, "category_slug": "userland"})
        for v in range(versions // modules):
            body = {
                "version_string": f"1.{v}.0",
                "manifest": {"name": name},
                "file_list": [f"/etc/{name}.conf"],
            }
            c.post(f"{API}/node_modules/{name}/versions", json=body).raise_for_status()
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    with Session(engine) as s:
        template_id = s.scalar(select(NodeTemplate.id).where(NodeTemplate.name == "base"))
        nodes, insts = [], []
        for i in range(instances):
            nid, iid = new_id(), new_id()
            host = f"node-{i:05d}"
            nodes.append(
                {
                    "id": nid,
                    "account": "default",
                    "hostname": host,
                    "template_id": template_id,
                    "node_metadata": {},
                    "created_at": now,
                }
            )
            insts.append(
                {
                    "id": iid,
                    "node_id": nid,
                    "hostname": host,
                    "template_id": template_id,
                    "status": "running",
                    "provider": "bench",
                    "provider_ref": None,
                    "running_module_digests": {},
                    "last_heartbeat_at": now,
                    "created_at": now,
                }
            )
        s.execute(insert(Node), nodes)
        s.execute(insert(NodeInstance), insts)
        # One bootstrap token per instance, and a webhook delivery with its ingest per
        # version: the two lists the console pages by keyset too.
        tokens = [
            {"id": new_id(), "instance_id": row["id"], "token_hash": f"{i:064x}",
             "created_by": "bench", "created_at": now - timedelta(seconds=i),
             "expires_at": now + timedelta(hours=1), "used_at": None}
            for i, row in enumerate(insts)
        ]  # fmt: skip
        s.execute(insert(BootstrapToken), tokens)
        module_ids = {n: i for n, i in s.execute(select(NodeModule.name, NodeModule.id))}
        deliveries, ingests = [], []
        for m in range(modules):
            mid = module_ids[f"mod-{m:03d}"]
            for v in range(versions // modules):
                at = now - timedelta(seconds=m * 100 + v)
                deliveries.append(
                    {"id": new_id(), "provider": "gitea", "delivery_id": f"d-{m}-{v}",
                     "module_id": mid, "event": "push", "ref": f"refs/tags/v1.{v}.0",
                     "received_at": at, "body_sha256": f"{m:032x}{v:032x}"}
                )  # fmt: skip
                ingests.append(
                    {"id": new_id(), "module_id": mid, "tag": f"v1.{v}.0",
                     "source": "webhook:gitea", "state": "built", "reason": "", "attempts": 1,
                     "created_at": at, "updated_at": at}
                )  # fmt: skip
        s.execute(insert(WebhookDelivery), deliveries)
        s.execute(insert(ModuleIngest), ingests)
        s.commit()
    engine.dispose()
    return "mod-000", insts[instances // 2]["id"]


def p(lat: list[float], q: float) -> float:
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000


def timed(c: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = c.get(path)
        out.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise SystemExit(f"GET {path}: {r.status_code} {r.text[:300]}")
    return out


def run(db_url: str, data: Path, instances: int, versions: int, n: int) -> bool:
    with serve(db_url, data) as (base, token):
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        t = time.perf_counter()
        module, iid = seed(api, db_url, instances, versions)
        print(
            f"seeded {instances} instances, {versions} versions in {time.perf_counter() - t:.1f} s"
        )
        ui = httpx.Client(base_url=base, timeout=60)
        r = ui.post("/app/login", data={"token": token, "next": "/app/system/modules"})
        assert r.status_code in (200, 303), r.text
        first = ui.get("/app/system/instances").text
        assert "Next page" in first, "the instances page has no next page"
        mid = f"node-{instances // 2:05d}|"
        instances_api = f"{API}/node_instances"
        versions_api = f"{API}/node_modules/{module}/versions"
        cases = [
            ("instances page 1", "/app/system/instances", instances_api),
            ("instances, a deep page", f"/app/system/instances?after={mid}", instances_api),
            ("instances of a status", "/app/system/instances?status=running", instances_api),
            ("versions page 1", "/app/system/versions", versions_api),
            ("modules page 1", "/app/system/modules", f"{API}/node_modules"),
            ("a module's versions", f"/app/system/modules/{module}", versions_api),
            (
                "the instance page",
                f"/app/system/instances/{iid}",
                f"{API}/node_instances/{iid}/drift",
            ),
            ("templates page 1", "/app/system/templates", f"{API}/node_templates"),
            ("nodes page 1", "/app/system/nodes", f"{API}/nodes"),
            ("bootstrap tokens page 1", "/app/system/bootstrap-tokens", f"{API}/bootstrap_tokens"),
            (
                "bootstrap tokens, live",
                "/app/system/bootstrap-tokens?state=live",
                f"{API}/bootstrap_tokens?status=live",
            ),
            ("deliveries page 1", "/app/system/deliveries", f"{API}/webhook_deliveries"),
            (
                "deliveries, built",
                "/app/system/deliveries?status=built",
                f"{API}/webhook_deliveries?status=built",
            ),
            ("events page 1", "/app/system/events", f"{API}/node_instances/{iid}/events"),
            ("audit log page 1", "/app/system/audit", f"{API}/audit_log?limit=50"),
        ]
        head = f"{'page':28} {'p50 ms':>8} {'p95 ms':>8}   {'REST p50':>8} {'REST p95':>8}"
        print(f"  {head} {'ratio':>6}")
        ok = True
        for label, page, rest in cases:
            lat = timed(ui, page, n)
            ref = timed(api, rest, max(3, n // 5))  # the fleet-wide REST list is heavy
            p95 = p(lat, 0.95)
            ok &= p95 <= TARGET_MS
            print(
                f"  {label:28} {p(lat, 0.5):8.1f} {p95:8.1f}   {p(ref, 0.5):8.1f} "
                f"{p(ref, 0.95):8.1f} {p95 / p(ref, 0.95):6.2f}"
            )
        api.close()
        ui.close()
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--versions", type=int, default=1_000)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    bindir = pgcluster.find_bindir()
    if bindir is None:
        print("PostgreSQL is not installed: skipped")
        return
    with tempfile.TemporaryDirectory() as tmp, pgcluster.temp_cluster(bindir) as server:
        url = pgcluster.create_database(server, "console")
        ok = run(url, Path(tmp), args.instances, args.versions, args.requests)
    print(f"target: every page p95 <= {TARGET_MS:.0f} ms: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
