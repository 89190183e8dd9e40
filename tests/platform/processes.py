"""Two real ``powernode platform serve`` processes on one database.

For races where the process boundary is part of the race: two operators
whose requests reach different platform processes (issue 13). Each process
is ``python -c 'powernode.cli.main.main()' platform serve`` on its own port,
without the ingest worker, sharing the database and the data directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token
from tests.platform.conftest import API, ROLES

START_TIMEOUT = 60.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    client: httpx.Client


@dataclass
class Platforms:
    servers: list[Server]
    tokens: dict[str, str]
    db_url: str

    def call(self, which: int, method: str, path: str, role: str = "admin", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return self.servers[which].client.request(method, API + path, headers=headers, **kw)


def _wait(server: Server, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"platform serve exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if server.client.get("/healthz").status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"platform serve did not answer in {START_TIMEOUT} s: {log.read_text()}")


@contextlib.contextmanager
def two_platforms(db_url: str, tmp_path: Path) -> Iterator[Platforms]:
    engine = make_engine(db_url)
    tokens: dict[str, str] = {}
    with Session(engine) as session:
        ctx = Ctx(session, Actor("test-setup", None, frozenset(SCOPES)), datetime.now(UTC))
        for role, scopes in ROLES.items():
            tokens[role] = create_token(ctx, role, scopes)[1]
        session.commit()
    engine.dispose()
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    servers: list[Server] = []
    try:
        for i in range(2):
            port = _port()
            log = tmp_path / f"serve-{i}.log"
            argv = [sys.executable, "-c", "from powernode.cli.main import main; main()",
                    "platform", "serve", "--no-worker", "--database", db_url,
                    "--data-dir", str(data), "--port", str(port)]  # fmt: skip
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            servers.append(Server(url, proc, httpx.Client(base_url=url, timeout=30)))
        for i, server in enumerate(servers):
            _wait(server, tmp_path / f"serve-{i}.log")
        yield Platforms(servers, tokens, db_url)
    finally:
        for server in servers:
            server.client.close()
            server.process.terminate()
        for server in servers:
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
