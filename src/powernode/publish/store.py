"""The node's module store (docs/artifact.md, "On a node: the shared store").

::

    <root>/objects/<2hex>/<62hex>   one ObjectStore shared by every module
    <root>/images/<hex>.cfs         composefs images, named by composefs digest
    <root>/blobs/sha256/<hex>       BlobCache: manifests, module.json, indexes, SBOMs

Invariants: a file has its final name only once its content was verified
against that name, written, fsynced and renamed; an image appears only
after every object it references is in ``objects/``. Temporary files start
with ``.partial-`` and live in the directory they will be renamed in
(``objects/<2hex>/`` for objects), so :meth:`ModuleStore.partials` finds leftovers.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from powernode import linux
from powernode.durable import fsync_dir
from powernode.oci.cache import PARTIAL_PREFIX, BlobCache
from powernode.oci.digest import Digest
from powernode.verity.objectstore import ObjectStore

SYNCFS_THRESHOLD = 8
_syncfs = linux.syncfs  # a module name: tests make it fail


@dataclass(frozen=True)
class ModuleStore:
    """Objects, images and blobs of every module pulled to this machine."""

    root: Path

    @property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.root / "objects")

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def blobs(self) -> BlobCache:
        return BlobCache(self.root / "blobs")

    def image_path(self, composefs_digest: Digest) -> Path:
        return self.images_dir / f"{composefs_digest.hex}.cfs"

    def ensure(self) -> None:
        for d in (self.root / "objects", self.images_dir, self.root / "blobs" / "sha256"):
            d.mkdir(parents=True, exist_ok=True)
        # The 256 fan-out directories up front (composefs stores have them), so
        # writing an object never waits on a mkdir.
        objects = self.root / "objects"
        if not (objects / "ff").is_dir():
            for i in range(256):
                (objects / f"{i:02x}").mkdir(exist_ok=True)

    def temp_file(self, directory: Path) -> tuple[int, Path]:
        """An open temporary file in ``directory`` (same filesystem as its final name)."""
        fd, name = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=directory)
        return fd, Path(name)

    def commit_objects(self, staged: Iterable[tuple[Path, str]]) -> int:
        """Make staged ``(temp, name)`` files durable, then rename them into place.

        The temporaries are written and closed. Every file's bytes are on
        disk before any of them gets its name, and the renames are on disk
        before this returns. Few files: ``fsync`` each and the directories.
        Many: one ``syncfs(2)`` before and one after the renames, because a
        per-file fsync costs about as much as writing the file again
        (measured: 0.7 ms per 128 KiB object here). Returns how many were
        committed.
        """
        items = list(staged)
        if not items:
            return 0
        batch = len(items) >= SYNCFS_THRESHOLD
        if batch:
            self._syncfs()
        else:
            for tmp, _ in items:
                # fsync through a read-only descriptor flushes the file all the same
                fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        dirs: set[Path] = set()
        for tmp, name in items:
            final = self.objects.path(name)
            if final.parent not in dirs and not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            dirs.add(final.parent)
        if batch:
            self._syncfs()
        else:
            for d in sorted(dirs):
                fsync_dir(d)
        return len(items)

    def _syncfs(self) -> None:
        fd = os.open(self.root / "objects", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def partials(self) -> list[Path]:
        """Temporary files (of a running or killed pull) anywhere in the store."""
        found: list[Path] = []
        for d in (self.root / "objects", self.images_dir, self.root / "blobs" / "sha256"):
            if d.is_dir():
                found.extend(sorted(d.glob(PARTIAL_PREFIX + "*")))
        objects = self.root / "objects"
        if objects.is_dir():
            found.extend(sorted(objects.glob(f"??/{PARTIAL_PREFIX}*")))
        return found


def discard_staged(staged: Iterable[tuple[Path, str]]) -> None:
    """Delete staged temporaries (those already renamed are gone from their temp names)."""
    for tmp, _ in staged:
        tmp.unlink(missing_ok=True)


class BatchCommitter:
    """Commits verified objects (:meth:`ModuleStore.commit_objects`) in batches on a thread.

    Downloads hand their run's objects over and go on with the next run, so
    the ``syncfs(2)`` that makes them durable overlaps the network instead
    of stalling a worker (before: 1.3 s of 4.3 s worker time in syncfs for
    256 MiB). Whatever queued while one batch was flushed becomes the next
    batch, so the number of flushes adapts to the disk.
    """

    def __init__(self, store: ModuleStore, *, poll: float = 0.5) -> None:
        self.store = store
        self.poll = poll
        self.pending: list[tuple[Path, str]] = []
        self.cond = threading.Condition()
        self.closed = False
        self.error: BaseException | None = None
        self.committed = 0
        self.thread = threading.Thread(target=self._loop, name="pull-commit", daemon=True)
        self.thread.start()

    def submit(self, items: list[tuple[Path, str]]) -> bool:
        """Queue verified objects; False (nothing queued) once a commit failed or after close."""
        with self.cond:
            if self.error is not None or self.closed:
                return False
            self.pending.extend(items)
            self.cond.notify()
            return True

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closed:
                    self.cond.wait(self.poll)
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            try:
                count = self.store.commit_objects(batch)
            except BaseException as e:
                with self.cond:
                    self.error = e
                    batch += self.pending
                    self.pending = []
                discard_staged(batch)
                return
            with self.cond:
                self.committed += count

    def close(self) -> int:
        """Commit what is queued, stop; raise the commit error if there was one."""
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.committed
