"""Shared code of the node-API benchmarks: the platform in its own process, enrolled agents,
closed-loop load from asyncio clients.

The platform runs as ONE uvicorn process (tlsserve.build_server: httptools,
uvloop, mTLS), started by running this file with ``serve``; the simulated
agents run in the benchmark's process, each an ``httpx.AsyncClient`` with its
own enrolled certificate and one keep-alive connection. Besides the app's
routes the server mounts ``POST /bench/bare``, a bare Starlette endpoint
(read the JSON body, answer JSON), as the reference in the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

API = "/api/v1/system"
BARE = "/bench/bare"


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_durable(database_url: str) -> str:
    """Refuse to measure on a PostgreSQL without fsync and synchronous_commit; say what it runs."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        got = {k: str(conn.execute(f"SHOW {k}").fetchone()[0]) for k in _DURABLE}  # type: ignore[index]
    if any(v != "on" for v in got.values()):
        raise SystemExit(f"PostgreSQL is not durable ({got}): the figures would not count")
    return ", ".join(f"{k}={v}" for k, v in got.items())


_DURABLE = ("fsync", "synchronous_commit", "full_page_writes")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Platform:
    url: str
    operator_token: str
    platform_ca: Path
    database_url: str
    proc: subprocess.Popen[bytes]

    def operator(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=str(self.platform_ca),
            headers={"Authorization": f"Bearer {self.operator_token}"},
            timeout=60,
        )


def _operator_token(database_url: str) -> str:
    from sqlalchemy.orm import Session

    from powernode.platform.db.migrate import upgrade
    from powernode.platform.db.session import make_engine
    from powernode.platform.services.context import SCOPES, Actor, Ctx
    from powernode.platform.services.tokens import create_token

    engine = make_engine(database_url)
    upgrade(engine)
    with Session(engine) as s:
        ctx = Ctx(s, Actor("bench", None, frozenset(SCOPES)), datetime.now(UTC))
        token = create_token(ctx, "bench", list(SCOPES))[1]
        s.commit()
    engine.dispose()
    return token


@contextmanager
def platform_process(database_url: str, data_dir: Path) -> Iterator[Platform]:
    """The platform over mTLS in a child process; stopped (SIGTERM) on exit."""
    token = _operator_token(database_url)
    port = spare_port()
    argv = [sys.executable, __file__, "serve", "--data", str(data_dir), "--db", database_url]
    proc = subprocess.Popen([*argv, "--port", str(port)])
    ca = data_dir / "pki" / "platform-ca.pem"
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the platform process exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("the platform did not answer /healthz within 60 s")
            try:
                if ca.exists() and httpx.get(url + "/healthz", verify=str(ca)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield Platform(url, token, ca, database_url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _serve(data: Path, db: str, port: int) -> None:
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from powernode.platform.app import create_app
    from powernode.platform.settings import Settings
    from powernode.platform.tlsserve import build_server

    settings = Settings(
        data_dir=data, database_url=db, tls=True, host="127.0.0.1", port=port,
        migrate_on_start=False,
    )  # fmt: skip
    app = create_app(settings)

    async def bare(request: Request) -> JSONResponse:
        await request.json()
        return JSONResponse({"server_time": datetime.now(UTC).isoformat()})

    # First in the table: the reference pays TLS, uvicorn and the middleware, not routing.
    app.router.routes.insert(0, Route(BARE, bare, methods=["POST"]))
    server = build_server(app, settings, access_log=False, log_level="warning")
    profile = os.environ.get("NODELOAD_PROFILE")  # a file for pstats: where the server's time goes
    if not profile:
        server.run()
        return
    import cProfile
    import signal

    # uvicorn re-raises the SIGTERM it handled once it has shut down; keep the process
    # alive long enough to write the profile.
    signal.raise_signal = lambda _sig: None
    with cProfile.Profile() as prof:
        server.run()
    prof.dump_stats(profile)


# -- agents ---------------------------------------------------------------------------------


@dataclass
class Agent:
    instance_id: str
    cert: Path
    key: Path


def create_instances(platform: Platform, n: int, prefix: str) -> list[str]:
    ids = []
    with platform.operator() as c:
        for i in range(n):
            host = f"{prefix}-{i:04d}"
            c.post(f"{API}/nodes", json={"hostname": host, "node_template_id": "base"})
            r = c.post(f"{API}/node_instances", json={"node_id": host})
            r.raise_for_status()
            ids.append(r.json()["instance"]["id"])
    return ids


def enroll(platform: Platform, instance_ids: list[str], workdir: Path) -> list[Agent]:
    """Each instance: a bootstrap token (operator API), then POST /node_api/enroll."""
    from powernode.agent.certstore import build_csr, generate_key, key_to_pem

    workdir.mkdir(parents=True, exist_ok=True)
    agents = []
    with platform.operator() as op, httpx.Client(verify=str(platform.platform_ca)) as anon:
        for i, instance in enumerate(instance_ids):
            r = op.post(f"{API}/node_instances/{instance}/bootstrap_tokens", json={})
            r.raise_for_status()
            key = generate_key()
            body = {"bootstrap_token": r.json()["token"], "csr_pem": build_csr(key, "").decode()}
            r = anon.post(platform.url + "/node_api/enroll", json=body)
            if r.status_code != 201:
                raise SystemExit(f"enroll {instance}: {r.status_code} {r.text[:300]}")
            cert, key_file = workdir / f"agent{i}.pem", workdir / f"agent{i}.key"
            cert.write_text(r.json()["certificate_pem"])
            key_file.write_bytes(key_to_pem(key))
            agents.append(Agent(instance, cert, key_file))
    return agents


def client_for(platform: Platform, agent: Agent) -> httpx.AsyncClient:
    from powernode.agent.transport import tls_context

    return httpx.AsyncClient(
        base_url=platform.url,
        verify=tls_context(platform.platform_ca, agent.cert, agent.key),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=60,
    )


# -- load -----------------------------------------------------------------------------------


@dataclass
class Stats:
    label: str
    requests: int
    seconds: float
    latencies: list[float] = field(repr=False)
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    def line(self, ref: Stats | None = None) -> str:
        ratio = f"{self.rate / ref.rate:8.3f}" if ref else f"{'':8}"
        return (
            f"  {self.label:30} {self.rate:9.0f} {self.pct(0.5):8.1f} {self.pct(0.99):8.1f} "
            f"{ratio} {self.server_cpu / self.seconds:7.2f} {self.client_cpu / self.seconds:7.2f}"
        )


HEADER = (
    f"  {'load':30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>8} "
    f"{'srv cpu':>7} {'cli cpu':>7}"
)


class RawClient:
    """HTTP/1.1 over TLS with one keep-alive connection and nothing else.

    httpx costs ~2 ms of CPU per request here, more than the server; on 2
    shared cores it would measure itself. This client costs a fraction of
    that, so the figures are the server's. Answers must carry Content-Length
    (uvicorn's JSON responses do).
    """

    def __init__(self, url: str, tls: ssl.SSLContext) -> None:
        parsed = httpx.URL(url)
        self.host, self.port, self.tls = parsed.host, parsed.port or 443, tls
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, server_hostname=self.host
            )
        reader, writer = self._streams
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(
            int(v) for k, _, v in (line.partition(":") for line in lines[1:])
            if k.lower() == "content-length"
        )  # fmt: skip
        return status, await reader.readexactly(length)

    async def aclose(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._streams[1].wait_closed()
        self._streams = None  # a post after this opens a new connection


def raw_client_for(platform: Platform, agent: Agent) -> RawClient:
    from powernode.agent.transport import tls_context

    return RawClient(platform.url, tls_context(platform.platform_ca, agent.cert, agent.key))


Request = Callable[[Any], Awaitable[tuple[int, bytes]]]


async def closed_loop(
    clients: list[Any], request: Request, seconds: float
) -> tuple[int, float, list[float]]:
    """Every client sends ``request`` back to back for ``seconds``; (count, wall, latencies)."""
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def one(client: Any) -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            status, body = await request(client)
            latencies.append(time.perf_counter() - t)
            if status != 200:
                raise SystemExit(f"status {status}: {body[:300]!r}")

    await asyncio.gather(*(one(c) for c in clients))
    return len(latencies), time.perf_counter() - start, latencies


async def measure(
    label: str,
    platform: Platform,
    clients: list[Any],
    request: Request,
    *,
    seconds: float,
) -> Stats:
    srv, cli = cpu_seconds(platform.proc.pid), time.process_time()
    n, wall, lat = await closed_loop(clients, request, seconds)
    return Stats(
        label, n, wall, lat, cpu_seconds(platform.proc.pid) - srv, time.process_time() - cli
    )


def _main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--port", type=int, required=True)
    args: Any = ap.parse_args()
    _serve(args.data, args.db, args.port)


if __name__ == "__main__":
    _main()
