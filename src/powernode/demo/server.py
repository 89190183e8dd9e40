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
import getpass
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType

import httpx

from powernode import linux
from powernode.errors import PowernodeError

log = logging.getLogger(__name__)

# `powernode …` as a child of this interpreter (the console script may not be on PATH).
POWERNODE = (sys.executable, "-c", "from powernode.cli.main import main; main()")
START_TIMEOUT = 60.0
FIRST_POLL = 0.01  # seconds before asking /healthz again; doubled up to LAST_POLL
LAST_POLL = 0.25
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
    linux.set_pdeathsig(signal.SIGTERM)


def create_token(data_dir: Path, name: str, scopes: tuple[str, ...], *, now: datetime) -> str:
    """What ``powernode platform token create --data-dir … --json`` does, in this process:
    migrate the database, store a new token, return its secret.

    In this process rather than a second ``powernode``: that cost an interpreter and
    the CLI's imports (about as much CPU as the platform's own start) while the
    platform starts beside it. The function is the command's (services/tokens.py).
    """
    # The platform's stack, imported when the demo gets here (not for `powernode --help`).
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from powernode.platform.db.migrate import upgrade  # noqa: PLC0415
    from powernode.platform.db.session import make_engine  # noqa: PLC0415
    from powernode.platform.services.context import SCOPES, Actor, Ctx  # noqa: PLC0415
    from powernode.platform.services.tokens import create_token as new_token  # noqa: PLC0415

    engine = make_engine(f"sqlite:///{data_dir / 'platform.db'}")
    try:
        upgrade(engine)
        with Session(engine, expire_on_commit=False) as session:
            admin = Actor(f"local:{getpass.getuser()}", None, frozenset(SCOPES))
            _, secret = new_token(Ctx(session, admin, now), name, list(scopes))
            session.commit()
    finally:
        engine.dispose()
    return secret


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
    def spawn(
        cls,
        data_dir: Path,
        registry: Path,
        log_path: Path,
        *,
        port: int | None = None,
        tls: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> PlatformProcess:
        """Start ``powernode platform serve`` on 127.0.0.1 and return at once (see
        :meth:`wait_ready`), so the caller can do other work while it starts.

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
        return cls(proc, f"{scheme}://127.0.0.1:{port}", log_path, argv)

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
        """:meth:`spawn`, then wait until ``/healthz`` answers (stopped if it does not)."""
        server = cls.spawn(data_dir, registry, log_path, port=port, tls=tls, extra_env=extra_env)
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

    def wait_ready(
        self,
        timeout: float,
        *,
        on_wait: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Return when ``/healthz`` answers 200; raise when the process exits or ``timeout``
        passes. ``on_wait(seconds so far)`` is called before each pause.

        Asked again after 10 ms, then twice as long each time up to 0.25 s: a fixed
        0.1 s pause cost a start that takes 1 s up to a tenth more, and asking more
        often than this takes CPU the starting platform wants. Bounded in time and
        in count (``timeout / LAST_POLL`` asks, plus the backoff's first ones).
        """
        start = clock()
        tls = self.url.startswith("https:")
        delay = FIRST_POLL
        client: httpx.Client | None = None  # one for the whole wait: a TLS context per ask is dear
        try:
            for _ in range(int(timeout / LAST_POLL) + 16):
                if self.proc.poll() is not None:
                    raise PowernodeError(
                        f"the platform exited with status {self.proc.returncode} while "
                        f"starting; its log {self.log_path} ends with:\n{self.log_tail()}"
                    )
                if tls and self.platform_ca is None:
                    self._find_ca()
                if client is None and (not tls or self.platform_ca is not None):
                    client = httpx.Client(timeout=1.0, verify=self.verify())
                if client is not None and self._healthy(client):
                    return
                elapsed = clock() - start
                if elapsed > timeout:
                    break
                if on_wait is not None:
                    on_wait(elapsed)
                sleep(min(delay, max(timeout - elapsed, 0.0)))
                delay = min(delay * 2, LAST_POLL)
        finally:
            if client is not None:
                client.close()
        raise PowernodeError(
            f"the platform did not answer {self.url}/healthz within {timeout:.0f} s; "
            f"see {self.log_path}:\n{self.log_tail()}"
        )

    def _healthy(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.url}/healthz").status_code == 200
        except (httpx.HTTPError, ssl.SSLError, OSError):
            return False

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
