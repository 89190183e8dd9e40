"""`powernode platform serve --tls`: prints the platform CA the agents pin, serves HTTPS with it,
and hands node certificates to the node API (enroll without one, 401 with a foreign one)."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from powernode.agent.transport import tls_context


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_until(proc: subprocess.Popen[str], marker: str, seconds: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.2):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} within {seconds} s; output: {lines}")


@pytest.mark.slow  # a real process: imports, migration, TLS identity (~5 s here)
def test_serve_tls_prints_the_platform_ca_and_serves_with_it(tmp_path: Path) -> None:
    port = _port()
    exe = Path(sys.executable).parent / "powernode"
    argv = [str(exe), "platform", "serve", "--tls", "--no-worker", "--port", str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*argv, "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = _read_until(proc, "Uvicorn running on https://", 60)
        ca_line = next(line for line in lines if "--platform-ca" in line)
        platform_ca = Path(ca_line.rsplit(": ", 1)[1])
        assert platform_ca == tmp_path / "data" / "pki" / "platform-ca.pem"
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(verify=tls_context(platform_ca), timeout=10) as client:
            assert client.get(url + "/healthz").json() == {"status": "ok"}
            # The node API sees no client certificate: a problem saying so, not a crash.
            answer = client.post(url + "/node_api/tasks/lease", json={"max": 1})
            assert answer.status_code == 401, answer.text
            assert "no client certificate" in answer.json()["detail"]
        # Not the node CA, not the system roots: the pin is the platform CA.
        with httpx.Client(verify=tls_context(tmp_path / "data" / "pki" / "node-ca.pem")) as c:
            try:
                c.get(url + "/healthz")
            except httpx.ConnectError as e:
                assert "certificate verify failed" in str(e)
            else:
                raise AssertionError("a client pinned to the node CA trusted the server")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode in (0, -signal.SIGTERM)
