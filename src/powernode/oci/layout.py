"""An OCI image-layout directory as a registry (image-spec ``image-layout.md``).

::

    <root>/oci-layout        {"imageLayoutVersion": "1.0.0"}
    <root>/index.json        an image index; one descriptor per tag
    <root>/blobs/sha256/<hex>

A tag is the descriptor annotation ``org.opencontainers.image.ref.name``, and
its value is exactly what skopeo (containers/image ``oci:`` transport) calls
the reference in ``oci:<root>:<ref>``: the text after the directory's ``:``,
taken as it is. So the two tools find each other's tags:

* the layout's *own* repository (``bare_repository``, a layout holding one
  module: ``oci:<root>:<tag>``) records the bare tag: ``1.0.0``, and its
  cosign-style signature ``sha256-<hex>.sig``;
* any other repository records ``<repository>:<tag>`` (the annotation's
  grammar allows ``/`` and ``:``), so one directory holds many modules
  (``oci:<root>:chrony:1.0.0``, signature ``chrony:sha256-<hex>.sig``), as
  the agent's ``modules_registry = "oci:/DIR"`` source reads them.

Blobs are shared by all repositories, as content addressing allows.

Every file is written to a temporary name in its own directory, fsynced and
renamed into place; index.json changes are serialised by ``flock`` on the
``oci-layout`` file, which is never replaced. A tampered blob is caught on
read: every byte served is hashed against the digest asked for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from powernode.errors import DataError, DigestMismatchError
from powernode.oci.cache import BlobCache, Readable, fsync_dir, write_verified
from powernode.oci.digest import CHUNK_SIZE, Digest, verify_bytes
from powernode.oci.errors import NotFoundError
from powernode.oci.mediatypes import (
    MANIFEST_TYPES,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    REF_NAME_ANNOTATION,
    Manifest,
)
from powernode.oci.ranges import check_range
from powernode.oci.refs import Reference, check_repository

log = logging.getLogger(__name__)

LAYOUT_VERSION = "1.0.0"
MAX_INDEX_SIZE = 64 << 20  # index.json is ours, but may have been edited by hand
_TAGS_SHOWN = 10  # tags named in a "no such tag" error; the rest elided


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _references(data: bytes, media_type: str) -> list[Digest]:
    """Digests a manifest points at (config, layers, subject or child manifests)."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise DataError(f"manifest is not JSON ({e}); push the bytes of an OCI manifest") from e
    if not isinstance(doc, dict):
        raise DataError("manifest is not a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and declared != media_type:
        raise DataError(
            f"manifest mediaType {declared!r} differs from the media type {media_type!r} "
            "it is pushed with"
        )
    descriptors: list[Any] = []  # Any: JSON
    if media_type == OCI_INDEX or "manifests" in doc:
        descriptors.extend(doc.get("manifests") or [])
    else:
        descriptors.append(doc.get("config"))
        descriptors.extend(doc.get("layers") or [])
    # `subject` is deliberately not required to exist (OCI v1.1 allows a dangling subject).
    out = []
    for i, d in enumerate(descriptors):
        if not isinstance(d, dict) or "digest" not in d:
            raise DataError(f"manifest descriptor #{i} has no digest")
        out.append(Digest.parse(d["digest"]))
    return out


class LayoutRegistry:
    """A :class:`~powernode.oci.registry.Registry` over an image-layout directory."""

    def __init__(
        self, root: Path, *, create: bool = True, bare_repository: str | None = None
    ) -> None:
        """``bare_repository``: the repository whose tags are recorded bare (``1.0.0``),
        skopeo's ``oci:<root>:<tag>``; every other repository's as ``<repository>:<tag>``."""
        self.root = root
        self.bare_repository = (
            check_repository(bare_repository) if bare_repository is not None else None
        )
        marker = root / "oci-layout"
        if not marker.exists():
            if not create:
                raise NotFoundError(f"{root}: not an OCI image layout (no oci-layout file)")
            (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            if not (root / "index.json").exists():
                self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
            # oci-layout last: its presence means the directory is complete.
            _atomic_write_bytes(marker, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        try:
            version = json.loads(marker.read_bytes()[:4096]).get("imageLayoutVersion")
        except (ValueError, AttributeError) as e:
            raise DataError(f"{marker}: not a JSON object ({e})") from e
        if version != LAYOUT_VERSION:
            raise DataError(
                f"{marker}: imageLayoutVersion {version!r} is not supported (only {LAYOUT_VERSION})"
            )

    def __repr__(self) -> str:
        return f"LayoutRegistry({str(self.root)!r})"

    # -- index.json ------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / "oci-layout").open("rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:  # Any: JSON
        path = self.root / "index.json"
        with path.open("rb") as f:
            raw = f.read(MAX_INDEX_SIZE + 1)
        if len(raw) > MAX_INDEX_SIZE:
            raise DataError(f"{path}: larger than {MAX_INDEX_SIZE} bytes")
        try:
            index = json.loads(raw)
        except ValueError as e:
            raise DataError(f"{path}: not JSON ({e}); restore it from a backup") from e
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise DataError(f"{path}: field 'manifests' must be a list")
        for i, d in enumerate(index["manifests"]):
            if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
                raise DataError(f"{path}: manifests[{i}]: a descriptor needs a digest")
        return index

    def _write_index(self, index: dict[str, Any]) -> None:  # Any: JSON
        _atomic_write_bytes(self.root / "index.json", json.dumps(index, indent=2).encode())

    @staticmethod
    def _ref_name(d: dict[str, Any]) -> str | None:  # Any: JSON
        annotations = d.get("annotations")
        name = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, dict) else None
        return name if isinstance(name, str) else None

    def ref_name(self, repository: str, tag: str) -> str:
        """The ``org.opencontainers.image.ref.name`` of ``repository:tag`` in this layout."""
        return tag if repository == self.bare_repository else f"{repository}:{tag}"

    def _tag_of(self, repository: str, name: str) -> str | None:
        """The tag ``name`` records for ``repository``, or None if it is another's."""
        if repository == self.bare_repository:
            return name if ":" not in name else None
        prefix = repository + ":"
        return name[len(prefix) :] if name.startswith(prefix) else None

    def _resolve_tag(self, ref: Reference) -> dict[str, Any]:  # Any: JSON
        wanted = self.ref_name(ref.repository, ref.target)  # called without a digest: the tag
        manifests = self._read_index()["manifests"]
        for d in manifests:
            if self._ref_name(d) == wanted:
                return dict(d)
        names = sorted({n for n in map(self._ref_name, manifests) if n is not None})
        held = ", ".join(names[:_TAGS_SHOWN]) + (", …" if len(names) > _TAGS_SHOWN else "")
        raise NotFoundError(
            f"{self.root}: no tag {wanted!r} in index.json; "
            + (f"the layout holds {held}" if names else "the layout holds no tags")
        )

    # -- blobs -----------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        check_repository(repository)
        return self.blob_path(digest).is_file()

    def push_blob(
        self,
        repository: str,
        source: Path | Readable,
        digest: Digest,
        size: int,
        *,
        mount_from: str | None = None,
    ) -> None:
        del mount_from  # one shared blobs/ directory: every blob is already "mounted"
        if self.blob_exists(repository, digest):
            return
        if isinstance(source, Path):
            with source.open("rb") as f:
                write_verified(self.blob_path(digest), f, digest, size=size)
        else:
            write_verified(self.blob_path(digest), source, digest, size=size)
        log.debug("layout %s: stored blob %s (%d bytes)", self.root, digest, size)

    def pull_blob_to(
        self,
        repository: str,
        digest: Digest,
        target: Path | BlobCache,
        *,
        size: int | None = None,
    ) -> Path:
        check_repository(repository)
        if isinstance(target, BlobCache) and target.has(digest):
            return target.path(digest)
        dest = target.path(digest) if isinstance(target, BlobCache) else target
        try:
            f = self.blob_path(digest).open("rb")
        except FileNotFoundError as e:
            raise NotFoundError(f"{self.root}: no blob {digest} (repository {repository})") from e
        with f:
            return write_verified(
                dest,
                iter(lambda: f.read(CHUNK_SIZE), b""),
                digest,
                size=size,
                what=f"{self.blob_path(digest)}",
            )

    def read_blob_range(
        self, repository: str, digest: Digest, offset: int, length: int
    ) -> Iterator[bytes]:
        """Bytes ``[offset, offset+length)`` of a blob, unverified: callers check them."""
        check_repository(repository)
        check_range(offset, length)
        try:
            f = self.blob_path(digest).open("rb")
        except FileNotFoundError as e:
            raise NotFoundError(f"{self.root}: no blob {digest} (repository {repository})") from e
        with f:
            f.seek(offset)
            remaining = length
            while remaining:
                chunk = f.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise DataError(
                        f"{self.blob_path(digest)}: ends before byte {offset + length}; "
                        "the blob is truncated"
                    )
                remaining -= len(chunk)
                yield chunk

    # -- manifests -------------------------------------------------------------

    def _read_manifest_blob(self, digest: Digest) -> bytes:
        path = self.blob_path(digest)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_MANIFEST_SIZE + 1)
        except FileNotFoundError as e:
            raise NotFoundError(f"{self.root}: no manifest {digest}") from e
        if len(data) > MAX_MANIFEST_SIZE:
            raise DataError(f"{path}: manifest larger than {MAX_MANIFEST_SIZE} bytes")
        verify_bytes(str(path), data, digest)
        return data

    def push_manifest(self, ref: Reference, data: bytes, media_type: str) -> Digest:
        if len(data) > MAX_MANIFEST_SIZE:
            raise DataError(f"manifest for {ref} is {len(data)} bytes; limit {MAX_MANIFEST_SIZE}")
        if media_type not in MANIFEST_TYPES:
            raise DataError(f"manifest for {ref}: unsupported media type {media_type!r}")
        digest = Digest.of_bytes(data)
        if ref.digest is not None and ref.digest != digest:
            raise DigestMismatchError(f"manifest for {ref}", str(ref.digest), str(digest))
        if ref.tag is None and ref.digest is None:
            ref.target  # noqa: B018  # raises the "neither tag nor digest" error
        missing = [d for d in _references(data, media_type) if not self.blob_path(d).is_file()]
        if missing:
            raise NotFoundError(
                f"manifest for {ref} references blobs not in {self.root}: "
                + ", ".join(map(str, missing))
                + "; push them first"
            )
        write_verified(self.blob_path(digest), [data], digest, size=len(data))
        descriptor: dict[str, Any] = {  # Any: JSON
            "mediaType": media_type,
            "digest": str(digest),
            "size": len(data),
        }
        artifact_type = json.loads(data).get("artifactType")
        if isinstance(artifact_type, str):
            descriptor["artifactType"] = artifact_type
        with self._locked():
            index = self._read_index()
            entries = index["manifests"]
            if ref.tag is not None:
                name = self.ref_name(ref.repository, ref.tag)
                entries[:] = [d for d in entries if self._ref_name(d) != name]
                entries.append({**descriptor, "annotations": {REF_NAME_ANNOTATION: name}})
            elif not any(d["digest"] == str(digest) for d in entries):
                entries.append(descriptor)  # untagged, but listed so it is not garbage
            self._write_index(index)
        log.info("layout %s: %s -> %s", self.root, ref, digest)
        return digest

    def get_manifest(self, ref: Reference) -> Manifest:
        if ref.digest is not None:
            data = self._read_manifest_blob(ref.digest)
            media_type = next(
                (
                    d.get("mediaType")
                    for d in self._read_index()["manifests"]
                    if d["digest"] == str(ref.digest)
                ),
                None,
            ) or json.loads(data).get("mediaType")
            if not isinstance(media_type, str):
                raise DataError(f"{self.root}: manifest {ref.digest} has no media type")
            return Manifest(data, media_type, ref.digest)
        d = self._resolve_tag(ref)
        digest = Digest.parse(d["digest"])
        data = self._read_manifest_blob(digest)
        if d.get("size") is not None and d["size"] != len(data):
            raise DataError(
                f"{self.root}: manifest {digest} is {len(data)} bytes, index.json says {d['size']}"
            )
        return Manifest(data, str(d.get("mediaType")), digest)

    def list_tags(self, repository: str) -> list[str]:
        check_repository(repository)
        names = (self._ref_name(d) for d in self._read_index()["manifests"])
        tags = (self._tag_of(repository, n) for n in names if n is not None)
        return sorted(t for t in tags if t is not None)

    def delete_manifest(self, ref: Reference) -> None:
        digest = ref.digest or Digest.parse(self._resolve_tag(ref)["digest"])
        with self._locked():
            index = self._read_index()
            entries = index["manifests"]

            def ours(d: dict[str, Any]) -> bool:  # Any: JSON
                name = self._ref_name(d)
                return d["digest"] == str(digest) and (
                    name is None or self._tag_of(ref.repository, name) is not None
                )

            kept = [d for d in entries if not ours(d)]
            if len(kept) == len(entries):
                raise NotFoundError(f"{self.root}: no manifest {digest} in {ref.repository}")
            index["manifests"] = kept
            self._write_index(index)
            if not any(d["digest"] == str(digest) for d in kept):
                # Layers stay: other manifests may share them, and there is no GC yet.
                self.blob_path(digest).unlink(missing_ok=True)
        log.info("layout %s: deleted %s (%s)", self.root, ref, digest)
