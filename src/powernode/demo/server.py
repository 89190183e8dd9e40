"""The platform as the demo runs it: ``powernode platform serve`` in a child process.

A child process rather than uvicorn in a thread: the platform is then
exactly what an operator starts, its logs go to a file in the demo dir, and
stopping it is one signal. It runs in its own session so a Ctrl-C at the
terminal reaches only the demo, which then stops it (SIGTERM: uvicorn's
graceful shutdown, flushing the ingest worker) on every exit path; should
the demo itself be killed, ``PR_SET_PDEATHSIG`` has the kernel send the child
SIGTERM too, so no platform outlives its demo.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from powernode.errors import CommandError, PowernodeError
from powernode.run import run

log = logging.getLogger(__name__)

# `powernode …` as a child of this interpreter (the console script may not be on PATH).
POWERNODE = (sys.executable, "-c", "from powernode.cli.main import main; main()")
_PR_SET_PDEATHSIG = 1  # prctl(2)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
LOG_TAIL = 2000
# What `platform serve --tls` prints (cli/platform.py) naming the CA agents pin.
_CA_LINE = re.compile(r"platform CA \(give it to agents as --platform-ca\): (.+)")


def powernode(*args: str | Path) -> list[str]:
    """The argv that runs ``powernode args…`` with this interpreter."""
    return [*POWERNODE, *(str(a) for a in args)]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def create_token(data_dir: Path, name: str, scopes: tuple[str, ...]) -> str:
    """``powernode platform token create … --json`` (migrates the database first): the secret."""
    argv = powernode("platform", "token", "create", "--data-dir", data_dir, "--name", name)
    for s in scopes:
        argv += ["--scope", s]
    proc = run([*argv, "--json"], timeout=120)
    try:
        secret = json.loads(proc.stdout)["token"]
    except (ValueError, KeyError, TypeError) as e:
        raise CommandError(argv, 0, f"unexpected output {proc.stdout[:200]!r}") from e
    return str(secret)


@dataclass
class PlatformProcess:
    """A running ``powernode platform serve``; :meth:`stop` it (or use ``with``)."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    argv: list[str] = field(default_factory=list)
    # With TLS: the platform CA the server certificate chains to (agents' --platform-ca).
    platform_ca: Path | None = None

    @classmethod
    def start(
        cls,
        data_dir: Path,
        registry: Path,
        log_path: Path,
        *,
        port: int | None = None,
        tls: bool = False,
        extra_env: dict[str, str] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> PlatformProcess:
        """Start the platform on 127.0.0.1 and wait until ``/healthz`` answers.

        ``tls``: ``platform serve --tls`` (the node API needs it), with the
        embedded self-signed identity under the data dir; the platform CA's
        path is read from what the server prints.
        """
        port = port or free_port()
        argv = powernode("platform", "serve", "--data-dir", data_dir, "--port", str(port))
        argv.append("--tls" if tls else "--no-tls")
        env = dict(os.environ)
        env["POWERNODE_REGISTRY"] = str(registry)
        env["PYTHONUNBUFFERED"] = "1"  # the CA line must reach the log while it serves
        env.update(extra_env or {})
        log.info("starting %s", " ".join(argv))
        with log_path.open("ab") as out:
            # Not run(): that waits for the command to finish; this one serves until stopped.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
            )
        scheme = "https" if tls else "http"
        server = cls(proc, f"{scheme}://127.0.0.1:{port}", log_path, argv)
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client of this server verifies against."""
        if self.platform_ca is None:
            return True
        return ssl.create_default_context(cafile=str(self.platform_ca))

    def _find_ca(self) -> None:
        match = _CA_LINE.search(self.log_tail())
        if match:
            self.platform_ca = Path(match.group(1).strip())

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        tls = self.url.startswith("https:")
        for _ in range(int(timeout * 10) + 1):  # bounded in count and time
            if self.proc.poll() is not None:
                raise PowernodeError(
                    f"the platform exited with status {self.proc.returncode} while starting; "
                    f"its log {self.log_path} ends with:\n{self.log_tail()}"
                )
            if tls and self.platform_ca is None:
                self._find_ca()
            if not tls or self.platform_ca is not None:
                try:
                    r = httpx.get(f"{self.url}/healthz", timeout=1.0, verify=self.verify())
                    if r.status_code == 200:
                        return
                except (httpx.HTTPError, ssl.SSLError, OSError):
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise PowernodeError(
            f"the platform did not answer {self.url}/healthz within {timeout:.0f} s; "
            f"see {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-LOG_TAIL:].decode(errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait, then SIGKILL; idempotent."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("platform pid %d ignored SIGTERM for %.0f s; killing it", self.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout)

    def __enter__(self) -> PlatformProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
