"""An artifact directory (docs/artifact.md) as the blobs and manifest to push.

Everything pushed is checked first, so a broken build never reaches a
registry: ``image.cfs`` must have the composefs digest ``module.json``
names, every object the image references must be a regular file in
``objects/`` whose fs-verity digest is its name, and the counts must agree.
Packs are not written to disk: :class:`PackReader` streams the object files
back to back (seekable, so a chunked upload can resume).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import DataError, DigestMismatchError
from powernode.oci.digest import CHUNK_SIZE, Digest
from powernode.publish.format import (
    COMPOSEFS_ANNOTATION,
    CONFIG_TYPE,
    IMAGE_TYPE,
    INDEX_TYPE,
    PACK_TYPE,
    SBOM_TYPE,
    TITLE,
    ArtifactManifest,
    Descriptor,
    FormatLimits,
    ModuleConfig,
    ObjectEntry,
    PackIndex,
    manifest_annotations,
    parse_module_config,
    plan_packs,
)
from powernode.verity.composefs.reader import ReaderLimits, open_image
from powernode.verity.fsverity import FsVerityHasher, fsverity_digest_file

log = logging.getLogger(__name__)

CONFIG_FILE = "module.json"
IMAGE_FILE = "image.cfs"
SBOM_FILE = "sbom.cdx.json"
OBJECTS_DIR = "objects"


class PackReader:
    """The files of one pack read as one stream: ``read``, ``seek``, ``tell``."""

    def __init__(self, files: tuple[tuple[Path, int], ...]) -> None:
        self._files = files
        self._starts: list[int] = []
        total = 0
        for _, size in files:
            self._starts.append(total)
            total += size
        self.size = total
        self._pos = 0
        self._index = 0
        self._open_index = -1
        self._handle: int | None = None

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or not 0 <= offset <= self.size:
            raise ValueError(f"cannot seek a pack to {offset} (whence {whence})")
        self._pos = offset
        self._index = 0
        while self._index < len(self._files) and (
            self._starts[self._index] + self._files[self._index][1] <= offset
        ):
            self._index += 1
        return offset

    def read(self, n: int = -1, /) -> bytes:
        if n < 0:
            n = self.size - self._pos
        out = bytearray()
        while len(out) < n and self._index < len(self._files):
            path, size = self._files[self._index]
            within = self._pos - self._starts[self._index]
            want = min(n - len(out), size - within)
            fd = self._fd(self._index, path)
            data = os.pread(fd, want, within)
            if len(data) != want:
                raise DataError(f"{path}: shorter than the {size} bytes it had when packed")
            out += data
            self._pos += want
            if within + want == size:
                self._index += 1
        return bytes(out)

    def _fd(self, index: int, path: Path) -> int:
        if self._open_index != index:
            self.close()
            self._handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self._open_index = index
        assert self._handle is not None
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
            self._open_index = -1

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LocalBlob:
    """A blob to push: a file, bytes, or a pack streamed from object files."""

    descriptor: Descriptor
    path: Path | None = None
    data: bytes | None = None
    pack: tuple[tuple[Path, int], ...] | None = None


@dataclass(frozen=True)
class PackedArtifact:
    """What ``push_artifact`` sends: blobs (config first) and the manifest bytes."""

    config: ModuleConfig
    manifest: ArtifactManifest
    manifest_bytes: bytes
    index: PackIndex
    blobs: tuple[LocalBlob, ...]


def _read_small(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError as e:
        raise DataError(
            f"{path}: missing; is {path.parent} an artifact directory written by "
            "`powernode module build`?"
        ) from e
    if len(data) > limit:
        raise DataError(f"{path}: larger than the limit of {limit} bytes")
    return data


def _regular(path: Path, what: str) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: {what} is missing from the artifact; rebuild it") from e
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: {what} is not a regular file (symlinks are refused)")
    return st.st_size


def _hash_pack(files: list[tuple[ObjectEntry, Path]]) -> Digest:
    """sha256 of the pack, verifying each object against its fs-verity name on the way."""
    pack_hash = hashlib.sha256()
    for entry, path in files:
        hasher = FsVerityHasher()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            remaining = entry.size
            while remaining:
                chunk = os.read(fd, min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise DataError(f"{path}: changed size while it was read")
                hasher.update(chunk)
                pack_hash.update(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        actual = hasher.digest().hex()
        if actual != entry.hex:
            raise DigestMismatchError(f"object {path}", f"sha256:{entry.hex}", f"sha256:{actual}")
    return Digest("sha256", pack_hash.hexdigest())


def pack_artifact(artifact_dir: Path, *, limits: FormatLimits | None = None) -> PackedArtifact:
    """Check the artifact directory and lay it out as the OCI blobs of docs/artifact.md."""
    limits = limits or FormatLimits()
    config_bytes = _read_small(artifact_dir / CONFIG_FILE, limits.max_config)
    config = parse_module_config(config_bytes, str(artifact_dir / CONFIG_FILE))
    image_path = artifact_dir / IMAGE_FILE
    image_size = _regular(image_path, "the composefs image")
    if image_size > limits.max_image:
        raise DataError(f"{image_path}: {image_size} bytes exceed the limit {limits.max_image}")
    actual = fsverity_digest_file(image_path).hex()
    if actual != config.composefs_digest.hex:
        raise DigestMismatchError(
            f"{image_path} (composefs digest in module.json)",
            str(config.composefs_digest),
            f"sha256:{actual}",
        )
    names = sorted(open_image(image_path, limits=ReaderLimits()).objects())
    store = artifact_dir / OBJECTS_DIR
    entries: list[tuple[str, int]] = []
    for name in names:
        entries.append((name.replace("/", ""), _regular(store / name, f"object {name}")))
    total = sum(size for _, size in entries)
    if (config.objects, config.object_bytes) != (len(entries), total):
        raise DataError(
            f"{artifact_dir / CONFIG_FILE}: says {config.objects} objects / "
            f"{config.object_bytes} bytes, the image references {len(entries)} / {total}; "
            "rebuild the artifact"
        )
    plan = plan_packs(entries)
    packs: list[LocalBlob] = []
    for n, pack in enumerate(plan):
        files = [(e, store / e.name) for e in pack]
        digest = _hash_pack(files)
        size = sum(e.size for e in pack)
        descriptor = Descriptor(PACK_TYPE, digest, size, {TITLE: f"objects-{n:04d}.pack"})
        packs.append(LocalBlob(descriptor, pack=tuple((p, e.size) for e, p in files)))
    index = PackIndex(
        tuple(p.descriptor.digest for p in packs), tuple(e for pack in plan for e in pack)
    )
    index_bytes = index.to_bytes()
    sbom_path = artifact_dir / SBOM_FILE
    sbom_size = _regular(sbom_path, "the SBOM")
    sbom_digest, _ = Digest.of_file(sbom_path)
    image_digest, _ = Digest.of_file(image_path)
    cfs = str(config.composefs_digest)
    config_blob = LocalBlob(
        Descriptor(CONFIG_TYPE, Digest.of_bytes(config_bytes), len(config_bytes)),
        data=config_bytes,
    )
    image_blob = LocalBlob(
        Descriptor(
            IMAGE_TYPE, image_digest, image_size, {COMPOSEFS_ANNOTATION: cfs, TITLE: IMAGE_FILE}
        ),
        path=image_path,
    )
    index_blob = LocalBlob(
        Descriptor(
            INDEX_TYPE,
            Digest.of_bytes(index_bytes),
            len(index_bytes),
            {TITLE: "objects.index.json"},
        ),
        data=index_bytes,
    )
    sbom_blob = LocalBlob(
        Descriptor(SBOM_TYPE, sbom_digest, sbom_size, {TITLE: SBOM_FILE}), path=sbom_path
    )
    manifest = ArtifactManifest(
        config_blob.descriptor,
        image_blob.descriptor,
        index_blob.descriptor,
        tuple(p.descriptor for p in packs),
        sbom_blob.descriptor,
        manifest_annotations(config),
    )
    log.info(
        "packed %s: %d objects (%d bytes) in %d packs",
        artifact_dir,
        len(entries),
        total,
        len(packs),
    )
    return PackedArtifact(
        config,
        manifest,
        manifest.to_bytes(),
        index,
        (config_blob, image_blob, index_blob, *packs, sbom_blob),
    )
