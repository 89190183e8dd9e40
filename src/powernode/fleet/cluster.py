"""The scaled deployment on one host: N API processes, M workers, one PostgreSQL, haproxy.

haproxy runs in TCP mode and terminates nothing: the TLS handshake, and so
the node's client certificate and the operator's HTTPS, go through to an API
process (docs/deploy.md). Its health check is an HTTPS ``GET /healthz`` to
each API process every second; a process that dies is out of rotation after
two failed checks, and a connection refused meanwhile is redispatched to
another process (``option redispatch``, ``retries``). A check may take up to
five seconds to answer (``timeout check``): a slow answer on a busy host is not
a dead process.

The first API process is started alone and waited for: it migrates the
database and makes the platform CA and the server certificate under the
shared data directory, which the others then load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import ConfigError, PowernodeError

START_SECONDS = 120.0
READY = "Uvicorn running on https://"


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_config(front_port: int, api_ports: list[int]) -> str:
    """haproxy.cfg: one TCP frontend, every API process a checked backend server."""
    servers = "\n".join(
        f"    server api{i} 127.0.0.1:{p} check check-ssl verify none inter 1s fall 2 rise 1"
        for i, p in enumerate(api_ports)
    )
    return f"""global
    maxconn 8000

defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    # A check's answer may take this long: with no "timeout check" it is "inter"
    # (1 s), and on a busy host a live process then failed two checks in a row and
    # haproxy had no server left. A dead process refuses at once: still out in 2 s.
    timeout check 5s
    retries 3
    option redispatch

frontend powernode
    bind 127.0.0.1:{front_port}
    default_backend api

backend api
    balance leastconn
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


@dataclass
class Cluster:
    """N ``platform serve --no-worker``, M ``platform worker`` and haproxy in front."""

    database_url: str
    data_dir: Path
    apis: int = 3
    workers: int = 2
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    api_procs: list[Proc] = field(default_factory=list)
    worker_procs: list[Proc] = field(default_factory=list)
    haproxy: Proc | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def platform_ca(self) -> Path:
        return self.data_dir / "pki" / "platform-ca.pem"

    def start(self) -> Cluster:
        if self.apis < 1 or self.workers < 0:
            raise ConfigError(f"need at least one API process (got {self.apis}) and workers >= 0")
        exe = shutil.which("haproxy")
        if exe is None:
            raise ConfigError("haproxy is not installed (apt-get install haproxy)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or spare_port()
        powernode = str(Path(sys.executable).parent / "powernode")
        for i in range(self.apis):
            port = spare_port()
            argv = [powernode, "platform", "serve", "--tls", "--no-worker", "--port", str(port)]
            proc = Proc(f"api{i}", [*argv, "--data-dir", str(self.data_dir)], self._log(f"api{i}"))
            self.api_procs.append(proc)
            self._spawn(proc)
            _wait_for(proc, READY)  # one after the other: the first makes the CA
        for i in range(self.workers):
            argv = [powernode, "platform", "worker", "--data-dir", str(self.data_dir)]
            proc = Proc(f"worker{i}", argv, self._log(f"worker{i}"))
            self.worker_procs.append(proc)
            self._spawn(proc)
        cfg = self.data_dir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.port, [self.api_port(i) for i in range(self.apis)]))
        self.haproxy = Proc("haproxy", [exe, "-db", "-f", str(cfg)], self._log("haproxy"))
        self._spawn(self.haproxy)
        self._wait_front()
        return self

    def api_port(self, i: int) -> int:
        return int(self.api_procs[i].argv[self.api_procs[i].argv.index("--port") + 1])

    def server_pids(self) -> list[int]:
        """The platform's processes (not haproxy): for CPU accounting from /proc."""
        return [p.pid for p in (*self.api_procs, *self.worker_procs) if p.pid]

    def kill(self, proc: Proc) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if proc.process is not None and proc.process.poll() is None:
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait(30)

    def restart(self, proc: Proc) -> None:
        self._spawn(proc)
        if proc in self.api_procs:
            _wait_for(proc, READY)

    def stop(self) -> None:
        for proc in (self.haproxy, *self.api_procs, *self.worker_procs):
            if proc is None or proc.process is None or proc.process.poll() is not None:
                continue
            proc.process.send_signal(signal.SIGTERM)
            try:
                proc.process.wait(20)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait(10)

    def _log(self, name: str) -> Path:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        return logs / f"{name}.log"

    def _spawn(self, proc: Proc) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env["POWERNODE_DATABASE_URL"] = self.database_url
        # Output to a file: a pipe nobody drains would stop the server once it fills.
        with proc.log.open("ab") as out:
            out.write(f"--- start {' '.join(proc.argv)}\n".encode())
            out.flush()
            proc.process = subprocess.Popen(
                proc.argv, stdout=out, stderr=subprocess.STDOUT, env=env
            )

    def _wait_front(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            assert self.haproxy is not None and self.haproxy.process is not None
            if self.haproxy.process.poll() is not None:
                raise PowernodeError(f"haproxy exited: {self.haproxy.log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise PowernodeError(f"haproxy did not listen on {self.port} in {START_SECONDS} s")

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_for(proc: Proc, marker: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        text = proc.log.read_text(errors="replace")
        starts = text.rfind("--- start ")
        if marker in text[max(starts, 0) :]:
            return
        if proc.process is not None and proc.process.poll() is not None:
            break
        time.sleep(0.2)
    raise PowernodeError(
        f"{proc.name} did not print {marker!r} within {START_SECONDS} s: "
        f"{proc.log.read_text(errors='replace')[-3000:]}"
    )


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (and their reaped children), from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # fields[0] is state (field 3); utime, stime, cutime, cstime are fields 14-17.
            total += sum(int(x) for x in fields[11:15]) / tick
    return total
