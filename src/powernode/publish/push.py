"""Push an artifact directory to a registry as one OCI image manifest (docs/artifact.md).

Blobs go first (config, image, index, packs, SBOM: each skipped when the
registry has it, each verified against its digest while it is read), the
manifest last, under the reference's tag: a registry never shows a manifest
whose blobs are missing, and a push that fails midway can simply be rerun.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from powernode.errors import ConfigError
from powernode.oci.cache import Readable
from powernode.oci.digest import Digest
from powernode.oci.mediatypes import OCI_MANIFEST
from powernode.oci.refs import Reference
from powernode.oci.registry import Registry
from powernode.publish.pack import LocalBlob, PackReader, pack_artifact
from powernode.publish.progress import CountingReader, Progress, no_progress

log = logging.getLogger(__name__)


def _push_one(registry: Registry, repository: str, blob: LocalBlob, progress: Progress) -> None:
    d = blob.descriptor
    task = f"push {d.annotations.get('org.opencontainers.image.title', d.media_type)}"
    if registry.blob_exists(repository, d.digest):
        progress(task, d.size, d.size)
        return
    with contextlib.ExitStack() as stack:
        source: Readable
        if blob.data is not None:
            source = io.BytesIO(blob.data)
        elif blob.path is not None:
            source = stack.enter_context(blob.path.open("rb"))
        else:
            assert blob.pack is not None
            source = stack.enter_context(PackReader(blob.pack))
        counted = CountingReader(source, task, d.size, progress)
        registry.push_blob(repository, counted, d.digest, d.size)


def push_artifact(
    registry: Registry,
    ref: Reference,
    artifact_dir: Path,
    *,
    progress: Progress | None = None,
) -> Digest:
    """Push ``artifact_dir`` as ``ref`` (which needs a tag); returns the manifest digest."""
    if ref.tag is None:
        raise ConfigError(
            f"push needs a tag to publish under: {ref} has none (e.g. {ref.repository}:1.0.0)"
        )
    report = progress or no_progress
    packed = pack_artifact(artifact_dir)
    for blob in packed.blobs:
        _push_one(registry, ref.repository, blob, report)
    digest = registry.push_manifest(ref, packed.manifest_bytes, OCI_MANIFEST)
    log.info("pushed %s as %s@%s", artifact_dir, ref, digest)
    return digest
