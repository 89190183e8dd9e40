"""Read an artifact's manifest and small blobs from a registry, verified and bounded.

Shared by pull and verify: the manifest (checked against its digest by the
registry client), its structure (``format.parse_manifest``), module.json and
the pack index, each fetched into a BlobCache (sha256 checked while
streaming) and parsed with limits.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import DataError, DigestMismatchError
from powernode.oci.cache import BlobCache
from powernode.oci.digest import Digest
from powernode.oci.mediatypes import OCI_MANIFEST
from powernode.oci.refs import Reference
from powernode.oci.registry import Registry
from powernode.publish.format import (
    ArtifactManifest,
    Descriptor,
    FormatLimits,
    ModuleConfig,
    PackIndex,
    check_config_matches,
    parse_index,
    parse_manifest,
    parse_module_config,
)
from powernode.verity.composefs.reader import Image, ReaderLimits
from powernode.verity.fsverity import fsverity_digest


@dataclass(frozen=True)
class RemoteArtifact:
    """A module manifest and its config and index, all verified and parsed."""

    reference: Reference  # pinned: repository@manifest digest
    manifest_bytes: bytes
    manifest_digest: Digest
    manifest: ArtifactManifest
    config_bytes: bytes
    config: ModuleConfig
    index: PackIndex


def read_blob(
    registry: Registry, repository: str, d: Descriptor, cache: BlobCache, limit: int
) -> bytes:
    """The blob's bytes via ``cache`` (downloaded and sha256-verified if absent)."""
    if d.size > limit:
        raise DataError(f"blob {d.digest} is {d.size} bytes; the limit is {limit}")
    path = registry.pull_blob_to(repository, d.digest, cache, size=d.size)
    data = path.read_bytes()
    if Digest.of_bytes(data) != d.digest:  # the cache is a directory anyone could edit
        path.unlink(missing_ok=True)
        raise DigestMismatchError(f"cached blob {path}", str(d.digest), str(Digest.of_bytes(data)))
    return data


def fetch_artifact(
    registry: Registry, ref: Reference, cache: BlobCache, limits: FormatLimits
) -> RemoteArtifact:
    """Resolve ``ref`` and read the module's manifest, module.json and index."""
    fetched = registry.get_manifest(ref)
    what = f"manifest {ref.repository}@{fetched.digest}"
    if fetched.media_type and fetched.media_type != OCI_MANIFEST:
        raise DataError(f"{what}: media type {fetched.media_type!r} is not {OCI_MANIFEST!r}")
    manifest = parse_manifest(fetched.data, what, limits)
    config_bytes = read_blob(registry, ref.repository, manifest.config, cache, limits.max_config)
    config = parse_module_config(config_bytes, f"module.json {manifest.config.digest}")
    check_config_matches(manifest, config, what)
    index_bytes = read_blob(registry, ref.repository, manifest.index, cache, limits.max_index)
    index = parse_index(
        index_bytes,
        [(p.digest, p.size) for p in manifest.packs],
        f"object index {manifest.index.digest}",
        limits,
    )
    if len(index.objects) != config.objects or sum(o.size for o in index.objects) != (
        config.object_bytes
    ):
        raise DataError(
            f"{what}: the index lists {len(index.objects)} objects, module.json says "
            f"{config.objects} ({config.object_bytes} bytes)"
        )
    pinned = Reference(ref.registry, ref.repository, None, fetched.digest)
    return RemoteArtifact(
        pinned, fetched.data, fetched.digest, manifest, config_bytes, config, index
    )


def fetch_image(
    registry: Registry, remote: RemoteArtifact, dest: Path, limits: FormatLimits
) -> Image:
    """Download the composefs image to ``dest`` (atomically) and check it.

    The layer's sha256 is checked while streaming; then its fs-verity digest
    must be the composefs digest, and the objects it references must be
    exactly the index's objects (no missing file content, no unexplained
    downloads).
    """
    d = remote.manifest.image
    if d.size > limits.max_image:
        raise DataError(
            f"image layer {d.digest} is {d.size} bytes; the limit is {limits.max_image}"
        )
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        registry.pull_blob_to(remote.reference.repository, d.digest, tmp, size=d.size)
        data = tmp.read_bytes()
        image = check_image(data, remote, f"image layer {d.digest}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return image


def check_image(data: bytes, remote: RemoteArtifact, what: str) -> Image:
    """Parse image bytes; check the composefs digest and the object set against the index."""
    expected = remote.config.composefs_digest
    actual = fsverity_digest(data).hex()
    if actual != expected.hex:
        raise DigestMismatchError(f"{what} (composefs digest)", str(expected), f"sha256:{actual}")
    image = Image.from_bytes(data, limits=ReaderLimits(), source=what)
    wanted = image.objects()
    listed = {o.name for o in remote.index.objects}
    if wanted != listed:
        missing = sorted(wanted - listed)[:3]
        extra = sorted(listed - wanted)[:3]
        raise DataError(
            f"{what}: the image's objects differ from the index (not in the index: "
            f"{missing}, not in the image: {extra})"
        )
    return image
