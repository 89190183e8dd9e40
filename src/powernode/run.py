"""The one wrapper for subprocesses: logs argv, captures output, raises CommandError."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
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
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (never through a shell), returning the completed process."""
    args = [str(a) for a in argv]
    log.debug("run: %s", " ".join(args))
    proc = subprocess.run(
        args, input=input, cwd=cwd, capture_output=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc
