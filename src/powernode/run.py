"""The one wrapper for subprocesses: logs argv, captures output, raises CommandError."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from powernode.errors import CommandError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    input: bytes | None = None,
    cwd: Path | None = None,
    timeout: float | None = 600,
    env: Mapping[str, str] | None = None,
    merge_output: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (never through a shell), returning the completed process.

    ``env`` is added to this process's environment. ``merge_output`` sends
    stderr into stdout, in the order it was written (a tool whose children
    write to both, like dpkg's maintainer scripts, reads in sequence); the
    CommandError then carries the merged output.
    """
    args = [str(a) for a in argv]
    log.debug("run: %s", " ".join(args))
    proc = subprocess.run(
        args,
        input=input,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env is not None else None,
    )
    if check and proc.returncode != 0:
        output = proc.stdout if merge_output else proc.stderr
        raise CommandError(args, proc.returncode, output.decode(errors="replace"))
    return proc
