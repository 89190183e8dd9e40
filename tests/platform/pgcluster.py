"""A throw-away PostgreSQL cluster for the tests: initdb --auth=trust on a spare port.

Isolated from the machine's cluster (no passwords, no shared state). When
run as root the server runs as the ``postgres`` user, because postgres
refuses to run as root. ``POWERNODE_TEST_POSTGRES_URL`` (a server URL whose
user may CREATE DATABASE) uses an existing server instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from powernode.run import run


def find_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def temp_cluster(bindir: Path, *, durable: bool = False) -> Iterator[str]:
    """Yields ``postgresql://postgres@127.0.0.1:PORT``; stops and removes the cluster after.

    ``durable``: PostgreSQL's own defaults (fsync, synchronous_commit and
    full_page_writes on), for benchmarks; the tests run without them for speed.
    """
    root = Path(tempfile.mkdtemp(prefix="powernode-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    port = _spare_port()
    try:
        run([*as_user, bindir / "initdb", "-D", data, "--auth=trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8", "--locale=C"], timeout=120)  # fmt: skip
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        run([*as_user, bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "60",
             "-o", opts, "start"], timeout=90)  # fmt: skip
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}"
        finally:
            run([*as_user, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
                check=False, timeout=60)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE ``name`` (from ``template``); returns its URL."""
    with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        conn.execute(sql.encode())
    return f"{server_url}/{name}"
