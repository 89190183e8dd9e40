"""Write an artifact directory atomically (docs/artifact.md "On disk").

Everything is written into a sibling temp directory (``.<out>.<random>.tmp``),
each file fsynced, then the directory renamed to ``out`` and the parent
fsynced: readers see no artifact or a whole one, and a failed build leaves
neither ``out`` nor the temp directory behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from powernode.durable import fsync_dir
from powernode.errors import ConfigError, SourceTreeError

log = logging.getLogger(__name__)


def check_out(out: Path) -> None:
    """Refuse an existing ``out``: an artifact is never half-replaced."""
    if out.exists() or out.is_symlink():
        raise ConfigError(
            f"{out}: already exists; remove it or pass another --out (a build never "
            "overwrites an artifact)"
        )


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write and fsync one file of the (not yet visible) artifact."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # whatever the umask
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temp directory beside ``out``, renamed to ``out`` when the block succeeds."""
    check_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as e:
        raise SourceTreeError(f"{out.parent}: cannot create the output: {e.strerror}") from e
    try:
        os.chmod(tmp, 0o755)  # noqa: S103 - mkdtemp makes it 0700; an artifact is world-readable
        yield tmp
        for dirpath, _, _ in os.walk(tmp):
            fsync_dir(Path(dirpath))
        check_out(out)  # appeared while we built: do not replace what someone else wrote
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, SourceTreeError):
            raise SourceTreeError(f"{out}: cannot write the artifact: {e.strerror}") from e
        raise
    log.info("artifact written to %s", out)
