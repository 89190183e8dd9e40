"""The node's shared, digest-addressed module store: one class for the puller and the agent.

Layout under the state directory (:mod:`powernode.node.layout`, docs/artifact.md
"On a node: the shared store")::

    <state>/objects/<2hex>/<62hex>   one ObjectStore shared by every module
    <state>/images/<hex>.cfs         composefs images, named by composefs digest
    <state>/blobs/sha256/<hex>       BlobCache: manifests, module.json, indexes, SBOMs

Invariants: a file has its final name only once its content was verified
against that name, written, fsynced and renamed; an image appears only
after every object it references is in ``objects/``. Temporary files start
with ``.partial-`` and live in the directory they will be renamed in
(``objects/<2hex>/`` for objects), so :meth:`ModuleStore.partials` finds
leftovers. The store does not trust what it already holds, either: the agent
re-verifies images and objects before every mount
(:mod:`powernode.agent.modules.verify`).

A pull (:mod:`powernode.publish.pull`) writes objects in batches
(:meth:`ModuleStore.commit_objects`); the agent adds digest-checked writes of
single images and objects and imports a local artifact directory
(``module build --out``), for a node without a registry and for tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from powernode import linux
from powernode.durable import fsync_dir
from powernode.errors import ConfigError, DataError, DigestMismatchError
from powernode.node import layout as names
from powernode.oci.cache import PARTIAL_PREFIX, BlobCache
from powernode.oci.digest import Digest
from powernode.verity.fsverity import FsVerityHasher
from powernode.verity.objectstore import ObjectStore

log = logging.getLogger(__name__)

SYNCFS_THRESHOLD = 8
_CHUNK = 1 << 20
# module.json is small (a manifest and a package list); refuse absurd ones.
MAX_MODULE_JSON_BYTES = 16 << 20
_syncfs = linux.syncfs  # a module name: tests make it fail


def image_digest(text: str, *, what: str = "composefs digest") -> Digest:
    """The composefs digest ``text`` names: ``sha256:<hex>``, or the bare ``<hex>`` the store
    names images by (``images/<hex>.cfs``, the attach state's mounted list); DataError naming
    ``what`` otherwise."""
    full = text if text.startswith("sha256:") else f"sha256:{text}"
    try:
        return Digest.parse(full)
    except DataError:
        raise DataError(
            f"{what}: {text!r} is not a sha256 digest; expected 'sha256:' and 64 lowercase hex"
        ) from None


@dataclass(frozen=True)
class ArtifactInfo:
    """What :meth:`ModuleStore.import_artifact` filed: the module and its composefs digest."""

    name: str
    version: str
    digest: Digest
    objects: int


@dataclass(frozen=True)
class ModuleStore:
    """Objects, images and blobs of every module on this machine, under ``root`` (the state)."""

    root: Path

    @property
    def objects_dir(self) -> Path:
        return self.root / names.OBJECTS_DIR

    @property
    def images_dir(self) -> Path:
        return self.root / names.IMAGES_DIR

    @property
    def blobs_dir(self) -> Path:
        return self.root / names.BLOBS_DIR

    @property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.objects_dir)

    @property
    def blobs(self) -> BlobCache:
        return BlobCache(self.blobs_dir)

    def image_path(self, composefs_digest: Digest) -> Path:
        return self.images_dir / names.image_name(composefs_digest.hex)

    def has_image(self, composefs_digest: Digest) -> bool:
        return self.image_path(composefs_digest).is_file()

    def has_object(self, name: str) -> bool:
        return self.objects.has(name)

    def ensure(self) -> None:
        for d in (self.objects_dir, self.images_dir, self.blobs_dir / names.BLOBS_ALGORITHM_DIR):
            d.mkdir(parents=True, exist_ok=True)
        # The 256 fan-out directories up front (composefs stores have them), so
        # writing an object never waits on a mkdir.
        if not (self.objects_dir / "ff").is_dir():
            for i in range(256):
                (self.objects_dir / f"{i:02x}").mkdir(exist_ok=True)

    def temp_file(self, directory: Path) -> tuple[int, Path]:
        """An open temporary file in ``directory`` (same filesystem as its final name)."""
        fd, name = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=directory)
        return fd, Path(name)

    # -- batches of objects (a pull) ---------------------------------------------------------

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
        fd = os.open(self.objects_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def partials(self) -> list[Path]:
        """Temporary files (of a running or killed pull) anywhere in the store."""
        found: list[Path] = []
        for d in (self.objects_dir, self.images_dir, self.blobs_dir / names.BLOBS_ALGORITHM_DIR):
            if d.is_dir():
                found.extend(sorted(d.glob(PARTIAL_PREFIX + "*")))
        if self.objects_dir.is_dir():
            found.extend(sorted(self.objects_dir.glob(f"??/{PARTIAL_PREFIX}*")))
        return found

    # -- single verified files (the agent) ---------------------------------------------------

    def put_image(self, data: bytes, digest: Digest) -> Path:
        """File image bytes under ``digest`` once their fs-verity digest matches it."""
        dest = self.image_path(digest)
        with _verified_file(dest, digest.hex, f"composefs image {dest}") as h:
            h.update(data)
        log.debug("stored image %s (%d bytes)", dest, len(data))
        return dest

    def put_image_file(self, src: Path, digest: Digest) -> Path:
        dest = self.image_path(digest)
        with _verified_file(dest, digest.hex, f"composefs image {src}") as h:
            _copy_into(src, h)
        return dest

    def put_object(self, name: str, data: bytes) -> Path:
        """File an object (``<2hex>/<62hex>``) once its content matches its name."""
        dest = self.objects.path(name)
        with _verified_file(dest, name.replace("/", ""), f"object {name}") as h:
            h.update(data)
        return dest

    def put_object_file(self, name: str, src: Path) -> Path:
        dest = self.objects.path(name)
        with _verified_file(dest, name.replace("/", ""), f"object {name} from {src}") as h:
            _copy_into(src, h)
        return dest

    def import_artifact(self, artifact: Path) -> ArtifactInfo:
        """File a built artifact directory (``module build --out``): image and every object.

        Objects already present are not copied again (the store is shared);
        each copied one is verified against its name while it is copied.
        """
        info = read_module_json(artifact)
        objects_dir = artifact / names.ARTIFACT_OBJECTS_DIR
        copied = total = 0
        if objects_dir.is_dir():
            for sub in sorted(objects_dir.iterdir()):
                if not sub.is_dir():
                    continue
                for obj in sorted(sub.iterdir()):
                    total += 1
                    name = f"{sub.name}/{obj.name}"
                    if not self.has_object(name):
                        self.put_object_file(name, obj)
                        copied += 1
        self.put_image_file(artifact / names.ARTIFACT_IMAGE, info.digest)
        log.info(
            "imported %s %s (%s): %d objects, %d copied",
            info.name,
            info.version,
            info.digest,
            total,
            copied,
        )
        return ArtifactInfo(info.name, info.version, info.digest, total)


@contextlib.contextmanager
def _verified_file(dest: Path, expected_hex: str, what: str) -> Iterator[_Sink]:
    """Yield a hasher; bytes fed to it go to a temp file renamed to ``dest`` if they match."""
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=PARTIAL_PREFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            sink = _Sink(out)
            yield sink
            out.flush()
            os.fsync(out.fileno())
        actual = sink.hasher.digest().hex()
        if actual != expected_hex:
            raise DigestMismatchError(what, f"sha256:{expected_hex}", f"sha256:{actual}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)


class _Sink:
    """Writes what it is given and hashes it (fs-verity sha256, 4 KiB blocks)."""

    def __init__(self, out: BinaryIO) -> None:
        self.hasher = FsVerityHasher()
        self._out = out

    def update(self, data: bytes) -> None:
        self.hasher.update(data)
        self._out.write(data)


def _copy_into(src: Path, hasher: _Sink) -> None:
    try:
        with src.open("rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
    except OSError as e:
        raise DataError(f"{src}: cannot read: {e.strerror}") from e


def read_module_json(artifact: Path) -> ArtifactInfo:
    """Name, version and composefs digest from ``<artifact>/module.json`` (docs/artifact.md)."""
    path = artifact / names.ARTIFACT_MODULE_JSON
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MODULE_JSON_BYTES + 1)
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read: {e.strerror}; give an artifact directory "
            "written by 'powernode module build --out'"
        ) from e
    if len(raw) > MAX_MODULE_JSON_BYTES:
        raise DataError(f"{path}: larger than {MAX_MODULE_JSON_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object")
    for key in ("name", "version", "composefs_digest"):
        if not isinstance(doc.get(key), str):
            raise DataError(f"{path}: field {key!r}: missing or not a string")
    try:
        digest = Digest.parse(doc["composefs_digest"])
    except DataError as e:
        raise DataError(f"{path}: composefs_digest: {e}") from e
    objects = doc.get("objects", 0)
    return ArtifactInfo(
        doc["name"], doc["version"], digest, objects if isinstance(objects, int) else 0
    )
