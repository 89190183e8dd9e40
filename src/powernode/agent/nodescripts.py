"""``exec``: run a NodeScript on this node, as an ``agent.exec`` task or by hand.

Refused before anything runs unless the script's signature verifies with a
key in ``nodescript_keys_file`` (signing/nodescript.py says what is signed:
body, interpreter, timeout and limits together). Then it runs:

- from a private directory (mode 0700) holding the script, as
  ``<interpreter> <script file>``, with a minimal environment (``PATH``,
  ``LANG=C.UTF-8``, ``POWERNODE_NODESCRIPT=<name>``, ``…_VERSION``);
- confined (agent/confine.py: a systemd scope, a cgroup v2 directory, cgroup
  v1 directories, or rlimits; no-new-privileges always), what the cgroup
  limits did (OOM kills, forks refused) in the outcome's ``limits_hit``;
- with its timeout: past it the process group gets SIGTERM, then SIGKILL
  after :data:`KILL_GRACE` seconds, and the outcome says ``timed_out``;
  an agent told to stop (SIGTERM) stops the script the same way;
- with its output bounded: the first ``limits.output_bytes`` of stdout and
  of stderr are kept, the rest is read and counted, never stored.

The exit code is the outcome: 0 acks the task with the result, anything else
(or a timeout) fails it, not retryable, the message carrying the exit code
and the end of stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from powernode.agent.confine import Limits, confine
from powernode.agent.tasks import TaskContext, TaskError
from powernode.errors import ConfigError, DataError
from powernode.node.fields import JSON
from powernode.signing.keys import PublicKey, load_public_key
from powernode.signing.nodescript import NodeScript, parse

log = logging.getLogger(__name__)

KILL_GRACE = 2.0
_POLL = 0.05
_PEM_END = b"-----END PUBLIC KEY-----"


def load_keys(path: Path | None) -> list[PublicKey]:
    """The trusted NodeScript keys: every PUBLIC KEY PEM in ``path`` (none: no file)."""
    if path is None:
        return []
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the NodeScript keys: {e.strerror}") from e
    keys = []
    for chunk in data.split(_PEM_END):
        if b"-----BEGIN PUBLIC KEY-----" in chunk:
            keys.append(load_public_key(chunk.strip() + b"\n" + _PEM_END + b"\n", source=str(path)))
    if not keys:
        raise ConfigError(f"{path}: no PUBLIC KEY PEM in it")
    return keys


@dataclass
class _Capture:
    limit: int
    kept: bytes = b""
    total: int = 0

    def drain(self, stream: IO[bytes]) -> None:
        buf = bytearray()
        while chunk := stream.read(65536):
            self.total += len(chunk)
            room = self.limit - len(buf)
            if room > 0:
                buf += chunk[:room]
        self.kept = bytes(buf)

    def doc(self, name: str) -> dict[str, JSON]:
        return {
            name: self.kept.decode(errors="replace"),
            f"{name}_bytes": self.total,
            f"{name}_truncated": self.total > len(self.kept),
        }


def run_script(
    script: NodeScript,
    keys: list[PublicKey],
    *,
    stopping: threading.Event | None = None,
    way: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, JSON]:
    """Verify and run ``script``; the result (exit code, output, confinement, signer).

    Raises DataError (before running anything) when the signature does not verify.
    """
    signer = script.verify(keys)
    return {**execute(script, stopping=stopping, way=way, clock=clock), "signed_by": signer}


def execute(
    script: NodeScript,
    *,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    stopping: threading.Event | None = None,
    way: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, JSON]:
    """Run ``script`` as :func:`run_script` does, without a signature check.

    For scripts whose signature was checked with something else: a module's
    migrations and init actions are covered by the module's signature.
    """
    lim = script.limits
    limits = Limits(lim["memory_bytes"], lim["tasks_max"], lim["cpu_seconds"])
    tag = f"{script.name}-{os.getpid()}-{time.monotonic_ns()}"
    how = confine(limits, tag, way)
    with tempfile.TemporaryDirectory(prefix="powernode-exec-") as tmp:
        path = Path(tmp) / "script"
        path.write_text(script.script)
        path.chmod(0o500)
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "POWERNODE_NODESCRIPT": script.name,
            "POWERNODE_NODESCRIPT_VERSION": str(script.version),
            **(extra_env or {}),
        }
        how.prepare()
        started = clock()
        try:
            proc = subprocess.Popen(
                how.argv([script.interpreter, str(path)]),
                cwd=cwd or tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=how.preexec(),  # noqa: PLW1509 - rlimits/cgroup/no_new_privs, no locks
                close_fds=True,
            )
        except OSError as e:
            how.cleanup()
            raise TaskError(f"cannot start {script.interpreter}: {e}", retryable=False) from e
        try:
            out, err = _Capture(lim["output_bytes"]), _Capture(lim["output_bytes"])
            assert proc.stdout is not None and proc.stderr is not None
            readers = [
                threading.Thread(target=out.drain, args=(proc.stdout,), daemon=True),
                threading.Thread(target=err.drain, args=(proc.stderr,), daemon=True),
            ]
            for r in readers:
                r.start()
            timed_out, stopped = _wait(proc, script.timeout_seconds, stopping, clock, started)
            for r in readers:
                r.join(KILL_GRACE)
        finally:
            how.cleanup()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    code = proc.returncode
    return {
        "name": script.name,
        "version": script.version,
        "exit_code": code,
        "timed_out": timed_out,
        "stopped": stopped,
        "timeout_seconds": script.timeout_seconds,
        "duration_seconds": round(clock() - started, 3),
        "confinement": how.way,
        "confinement_note": how.note,
        # cgroup ways: what the limits did (confine.py); {} under rlimits or systemd
        "limits_hit": cast("dict[str, JSON]", dict(how.limits_hit)),
        **out.doc("stdout"),
        **err.doc("stderr"),
    }


def _kill(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait(
    proc: subprocess.Popen[bytes],
    timeout: float,
    stopping: threading.Event | None,
    clock: Callable[[], float],
    started: float,
) -> tuple[bool, bool]:
    """Wait for the script; (timed out, stopped by the agent)."""
    while True:
        left = started + timeout - clock()
        if left <= 0:
            _kill(proc)
            return True, False
        if stopping is not None and stopping.is_set():
            _kill(proc)
            return False, True
        try:
            proc.wait(min(left, _POLL if stopping is not None else left))
        except subprocess.TimeoutExpired:
            continue
        # The session may hold children still running: end them with their leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return False, False


def verdict(result: dict[str, JSON]) -> dict[str, JSON]:
    """The task outcome: the result if the script exited 0, else a TaskError saying why."""
    if result["exit_code"] == 0 and not result["timed_out"] and not result["stopped"]:
        return result
    what = f"NodeScript {result['name']} v{result['version']}"
    tail = str(result["stderr"])[-1000:]
    if result["timed_out"]:
        why = f"killed after its timeout of {result['timeout_seconds']} s"
    elif result["stopped"]:
        why = "stopped: the agent is shutting down"
    else:
        why = f"exited {result['exit_code']}"
    hit = result.get("limits_hit")
    if isinstance(hit, dict) and hit.get("memory_oom_kills"):
        why += f" (killed by its memory limit: {hit['memory_oom_kills']} OOM kill(s))"
    if isinstance(hit, dict) and hit.get("tasks_refused"):
        why += f" ({hit['tasks_refused']} fork(s) refused at its tasks limit)"
    raise TaskError(
        f"{what} {why} (confinement {result['confinement']}); stderr: {tail!r}",
        retryable=False,
    )


def exec_task(keys_file: Path | None) -> Callable[[TaskContext], dict[str, JSON]]:
    """The ``agent.exec`` handler: payload ``{"nodescript": {…signed document…}}``."""

    def handler(ctx: TaskContext) -> dict[str, JSON]:
        try:
            script = parse(ctx.payload.get("nodescript"))
            keys = load_keys(keys_file)
            result = run_script(script, keys, stopping=ctx.stopping)
        except (DataError, ConfigError) as e:
            raise TaskError(f"refused: {e}", retryable=False) from e
        return verdict(result)

    return handler
