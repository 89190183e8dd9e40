"""The node's module store (docs/artifact.md, "On a node: the shared store").

::

    <root>/objects/<2hex>/<62hex>   one ObjectStore shared by every module
    <root>/images/<hex>.cfs         composefs images, named by composefs digest
    <root>/blobs/sha256/<hex>       BlobCache: manifests, module.json, indexes, SBOMs

Invariants: a file has its final name only once its content was verified
against that name, written, fsynced and renamed; an image appears only
after every object it references is in ``objects/``. Temporary files start
with ``.partial-`` and live in the directory they will be renamed in
(``objects/`` for objects), so :meth:`ModuleStore.partials` finds leftovers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from powernode.oci.cache import PARTIAL_PREFIX, BlobCache, fsync_dir
from powernode.oci.digest import Digest
from powernode.verity.objectstore import ObjectStore


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

    def temp_file(self, directory: Path) -> tuple[int, Path]:
        """An open temporary file in ``directory`` (same filesystem as its final name)."""
        fd, name = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=directory)
        return fd, Path(name)

    def commit_objects(self, staged: Iterable[tuple[int, Path, str]]) -> int:
        """fsync each staged ``(fd, temp, name)``, rename it into place, fsync the directories.

        Files are synced before any rename, so no object gets its name before
        its bytes are durable. Returns how many were committed.
        """
        items = list(staged)
        dirs: set[Path] = set()
        try:
            for fd, _, _ in items:
                os.fsync(fd)
        finally:
            for fd, _, _ in items:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for _, tmp, name in items:
            final = self.objects.path(name)
            final.parent.mkdir(exist_ok=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            dirs.add(final.parent)
        for d in sorted(dirs):
            fsync_dir(d)
        return len(items)

    def partials(self) -> list[Path]:
        """Temporary files (of a running or killed pull) anywhere in the store."""
        found: list[Path] = []
        for d in (self.root / "objects", self.images_dir, self.root / "blobs" / "sha256"):
            if d.is_dir():
                found.extend(sorted(d.glob(PARTIAL_PREFIX + "*")))
        return found
