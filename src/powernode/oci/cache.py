"""A digest-addressed local blob cache, shared by every module on a machine.

Layout: ``<root>/sha256/<hex>``. A file exists under its final name only
after its bytes were hashed to that name, written, fsynced and renamed
(``os.replace``) from a temporary ``.partial-*`` file in the same directory,
so a reader never sees a half-written blob; a failed or interrupted write
deletes its temporary file. :meth:`BlobCache.sweep_partials` removes the
temporaries that a killed process could not.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from powernode.durable import atomic_file
from powernode.oci.digest import CHUNK_SIZE, Digest, VerifyingWriter

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"


@runtime_checkable
class Readable(Protocol):
    """Anything with ``read(n) -> bytes``: open files, sockets' makefile, BytesIO."""

    def read(self, n: int = -1, /) -> bytes: ...


Chunks = Iterable[bytes] | Readable


def iter_chunks(source: Chunks, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Chunks from an iterable of bytes or a readable binary file."""
    if isinstance(source, Readable):
        while chunk := source.read(chunk_size):
            yield chunk
    else:
        yield from source


def write_verified(
    dest: Path,
    chunks: Chunks,
    digest: Digest,
    *,
    size: int | None = None,
    max_size: int = 1 << 40,
    what: str | None = None,
) -> Path:
    """Write ``chunks`` to ``dest`` atomically, only if they hash to ``digest``.

    On any error (mismatch, truncation, I/O, an exception from the source)
    the temporary file is removed and ``dest`` is untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest, mode=0o644, temp_prefix=PARTIAL_PREFIX) as f:  # blobs are not secret
        writer = VerifyingWriter(
            f, digest, size=size, max_size=max_size, what=what or f"blob {digest}"
        )
        for chunk in iter_chunks(chunks):
            writer.write(chunk)
        writer.finish()
    return dest


class BlobCache:
    """Verified blobs by digest under ``root``; safe for concurrent writers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: Digest) -> Path:
        return self.root / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def put_verified(
        self,
        chunks: Chunks,
        digest: Digest,
        *,
        size: int | None = None,
        max_size: int = 1 << 40,
    ) -> Path:
        """Store ``chunks`` under ``digest`` if they hash to it; return the path.

        Two writers racing on one digest both succeed: the bytes are equal and
        the second ``os.replace`` swaps in an identical file.
        """
        path = write_verified(self.path(digest), chunks, digest, size=size, max_size=max_size)
        log.debug("cached %s", digest)
        return path

    def put_file(self, source: Path, digest: Digest) -> Path:
        """Copy a local file into the cache, verifying it."""
        if self.has(digest):
            return self.path(digest)
        with source.open("rb") as f:
            return self.put_verified(f, digest)

    def partials(self) -> list[Path]:
        """Temporary files left behind (by a killed writer or one still running)."""
        base = self.root / "sha256"
        return sorted(base.glob(PARTIAL_PREFIX + "*")) if base.is_dir() else []

    def sweep_partials(
        self, *, older_than: float = 3600.0, now: Callable[[], float] = time.time
    ) -> int:
        """Delete temporaries older than ``older_than`` seconds; return how many.

        The age guard keeps a concurrent writer's live temporary file.
        """
        removed = 0
        cutoff = now() - older_than
        for p in self.partials():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
        return removed
