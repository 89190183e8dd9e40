"""The node's shared, digest-addressed module store as the agent reads it (docs/artifact.md).

The same directory as :class:`powernode.publish.store.ModuleStore`, which a
pull writes into; this view adds what the agent needs besides pulling:
digest-checked writes of single images and objects, and importing a local
artifact directory (``module build --out``), for a node without a registry
and for tests.

Layout under the state directory ``<state>``:

- ``objects/<2hex>/<62hex>``: one :class:`~powernode.verity.objectstore.ObjectStore`
  shared by every module, so an object present for one module is never
  downloaded for another;
- ``images/<composefs hex>.cfs``: composefs images, named by their fs-verity
  digest (the composefs digest);
- ``blobs/``: the OCI ``BlobCache`` for manifests, config, pack index, SBOM.

Every write here is verified before it gets its final name: content is hashed
while it is written to a temporary file in the same directory, compared with
the digest it is filed under, fsynced and renamed (``os.replace``), so a
reader never finds a half-written or mislabelled entry. The store does not
trust what it already holds, either: the agent re-verifies images and objects
before every mount (:mod:`powernode.agent.modules.verify`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from powernode.durable import atomic_file
from powernode.errors import ConfigError, DataError, DigestMismatchError
from powernode.verity.fsverity import FsVerityHasher
from powernode.verity.objectstore import ObjectStore

log = logging.getLogger(__name__)

_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
# module.json is small (a manifest and a package list); refuse absurd ones.
MAX_MODULE_JSON_BYTES = 16 << 20


def digest_hex(digest: str, *, field: str = "composefs digest") -> str:
    """The 64 hex digits of ``"sha256:<hex>"`` (or of bare ``<hex>``); DataError otherwise."""
    hex_part = digest.removeprefix("sha256:")
    if not _HEX.fullmatch(hex_part):
        raise DataError(
            f"{field}: {digest!r} is not a sha256 digest; expected 'sha256:' and 64 lowercase hex"
        )
    return hex_part


@contextlib.contextmanager
def _verified_file(dest: Path, expected_hex: str, what: str) -> Iterator[_Sink]:
    """Yield a hasher; bytes fed to it go to a temp file renamed to ``dest`` if they match."""
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with atomic_file(dest, mode=0o644, temp_prefix=".partial-") as out:
        sink = _Sink(out)
        yield sink
        actual = sink.hasher.digest().hex()
        if actual != expected_hex:
            raise DigestMismatchError(what, f"sha256:{expected_hex}", f"sha256:{actual}")


class _Sink:
    """Writes what it is given and hashes it (fs-verity sha256, 4 KiB blocks)."""

    def __init__(self, out: BinaryIO) -> None:
        self.hasher = FsVerityHasher()
        self._out = out

    def update(self, data: bytes) -> None:
        self.hasher.update(data)
        self._out.write(data)


@dataclass(frozen=True)
class ArtifactInfo:
    """What :meth:`NodeStore.import_artifact` filed: the module and its composefs digest."""

    name: str
    version: str
    digest: str  # "sha256:<hex>"
    objects: int


@dataclass(frozen=True)
class NodeStore:
    """The shared store under a node's state directory."""

    root: Path

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.objects_dir)

    def image_path(self, digest: str) -> Path:
        return self.images_dir / f"{digest_hex(digest)}.cfs"

    def has_image(self, digest: str) -> bool:
        return self.image_path(digest).is_file()

    def has_object(self, name: str) -> bool:
        return self.objects.has(name)

    def put_image(self, data: bytes, digest: str) -> Path:
        """File image bytes under ``digest`` once their fs-verity digest matches it."""
        dest = self.image_path(digest)
        with _verified_file(dest, digest_hex(digest), f"composefs image {dest}") as h:
            h.update(data)
        log.debug("stored image %s (%d bytes)", dest, len(data))
        return dest

    def put_image_file(self, src: Path, digest: str) -> Path:
        dest = self.image_path(digest)
        with _verified_file(dest, digest_hex(digest), f"composefs image {src}") as h:
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
        objects_dir = artifact / "objects"
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
        self.put_image_file(artifact / "image.cfs", info.digest)
        log.info(
            "imported %s %s (%s): %d objects, %d copied",
            info.name,
            info.version,
            info.digest,
            total,
            copied,
        )
        return ArtifactInfo(info.name, info.version, info.digest, total)


def _copy_into(src: Path, hasher: _Sink) -> None:
    try:
        with src.open("rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
    except OSError as e:
        raise DataError(f"{src}: cannot read: {e.strerror}") from e


def read_module_json(artifact: Path) -> ArtifactInfo:
    """Name, version and composefs digest from ``<artifact>/module.json`` (docs/artifact.md)."""
    path = artifact / "module.json"
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
    digest = doc["composefs_digest"]
    digest_hex(digest, field=f"{path}: composefs_digest")
    objects = doc.get("objects", 0)
    return ArtifactInfo(
        doc["name"], doc["version"], digest, objects if isinstance(objects, int) else 0
    )
