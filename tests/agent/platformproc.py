"""The real platform as its own process, for tests that stop and restart it (SIGKILL included).

``python -m tests.agent.platformproc DATA_DIR PORT VISIBILITY_SECONDS`` serves
``create_app`` over TLS with ``tlsserve.build_server``, as ``powernode
platform serve --tls`` does, but with a short visibility timeout (the CLI
has no option for it) so tasks a killed agent held come back within a test.
``PlatformProcess`` starts it, waits for the port to answer and stops it
(SIGTERM, then SIGKILL after a grace period), bounded in time throughout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from powernode.platform.settings import Settings

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


def settings_for(data_dir: Path, port: int) -> Settings:
    return Settings(data_dir=data_dir, host=HOST, port=port, tls=True)


def main(argv: list[str]) -> None:
    from powernode.platform.app import create_app
    from powernode.platform.services.nodeapi.identity import NodeApiPolicy
    from powernode.platform.tlsserve import build_server

    data_dir, port, visibility = Path(argv[0]), int(argv[1]), float(argv[2])
    settings = settings_for(data_dir, port)
    policy = NodeApiPolicy(visibility_timeout=timedelta(seconds=visibility))
    app = create_app(settings, node_policy=policy)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    server = build_server(
        app, settings, now=datetime.now(UTC), access_log=False, log_level="warning"
    )
    server.run(sockets=[sock])


class PlatformProcess:
    """One platform process at a time on ``port``, on the database under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int, visibility: float, log: Path) -> None:
        self.data_dir, self.port, self.visibility, self.log = data_dir, port, visibility, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        assert self.proc is None, "already running"
        src = Path(sys.modules["powernode"].__file__ or "").resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.agent.platformproc",
                    *(str(self.data_dir), str(self.port), str(self.visibility)),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the platform exited {self.proc.returncode}: {self.tail()}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"the platform did not listen within {timeout} s: {self.tail()}")

    def stop(self, *, kill: bool = False, grace: float = 5) -> None:
        """SIGKILL, or SIGTERM and SIGKILL after ``grace`` seconds; waits for the exit."""
        proc, self.proc = self.proc, None
        assert proc is not None, "not running"
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        if self.proc is not None:
            self.stop(kill=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


if __name__ == "__main__":
    main(sys.argv[1:])
