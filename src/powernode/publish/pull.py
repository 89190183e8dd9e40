"""Pull a module artifact into a node's shared store (docs/artifact.md).

Order, so that a failure at any step leaves nothing half-written:

1. manifest (digest-checked), module.json and index into the BlobCache;
2. the image into a temporary file in ``images/``: sha256 while streaming,
   then its fs-verity digest against the composefs digest and its object
   set against the index;
3. only the objects ``objects/`` lacks (shared by every module), by HTTP
   Range from the packs, each checked against its fs-verity name
   (:mod:`powernode.publish.fetch`);
4. the image renamed to ``images/<composefs hex>.cfs``; the manifest and
   SBOM cached.

An image under its final name therefore always has all of its objects.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import DataError
from powernode.node.store import ModuleStore
from powernode.oci.digest import Digest
from powernode.oci.refs import Reference
from powernode.oci.registry import Registry
from powernode.publish.fetch import FetchTuning, fetch_objects
from powernode.publish.format import FormatLimits
from powernode.publish.progress import Progress, no_progress
from powernode.publish.remote import check_image, fetch_artifact, fetch_image, read_blob
from powernode.verity.composefs.objects import try_enable_verity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PulledArtifact:
    """What a pull produced and what it cost."""

    reference: Reference  # pinned to the manifest digest
    manifest_digest: Digest
    config: dict[str, object]  # module.json
    image: Path
    composefs_digest: Digest
    bytes_downloaded: int  # object bytes fetched (packs or ranges), excluding metadata
    objects_fetched: int
    objects_reused: int


def _enable_verity(paths: list[Path]) -> None:
    """fs-verity on what this pull added, where the filesystem has it (a node's persist
    store), as mkcomposefs does: the overlay's ``verity=`` then checks them from the first
    mount, and the next boot's initramfs has nothing left to enable. Stops at the first
    "not supported" (this host's kernel); a failure is only logged."""
    for path in paths:
        if not try_enable_verity(os.fsencode(path)):
            return


def pull_artifact(
    registry: Registry,
    ref: Reference,
    store: ModuleStore,
    *,
    progress: Progress | None = None,
    limits: FormatLimits | None = None,
    tuning: FetchTuning | None = None,
) -> PulledArtifact:
    """Pull ``ref`` into ``store``; raise (leaving no temporary files) on anything wrong."""
    limits = limits or FormatLimits()
    report = progress or no_progress
    store.ensure()
    remote = fetch_artifact(registry, ref, store.blobs, limits)
    cfs = remote.config.composefs_digest
    final = store.image_path(cfs)
    if final.is_file():
        # Already pulled by another module version with the same tree: recheck it.
        check_image(final.read_bytes(), remote, str(final))
        staged: Path | None = None
    else:
        staged = final.with_name(f".partial-{cfs.hex}.cfs")
        fetch_image(registry, remote, staged, limits)
    try:
        objects = store.objects
        missing = [o for o in remote.index.objects if not objects.has(o.name)]
        stats = fetch_objects(
            registry,
            remote.reference.repository,
            remote.manifest.packs,
            missing,
            store,
            progress=report,
            tuning=tuning,
        )
        still = [o.name for o in remote.index.objects if not objects.has(o.name)]
        if still:
            raise DataError(f"{len(still)} objects still missing after the pull, e.g. {still[0]}")
        read_blob(registry, ref.repository, remote.manifest.sbom, store.blobs, limits.max_sbom)
        store.blobs.put_verified([remote.manifest_bytes], remote.manifest_digest)
        if staged is not None:
            staged.replace(final)
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise
    _enable_verity([final, *(objects.path(o.name) for o in missing)])
    reused = len(remote.index.objects) - len(missing)
    log.info(
        "pulled %s: %d objects fetched (%d bytes), %d reused",
        remote.reference,
        stats.objects_fetched,
        stats.bytes_downloaded,
        reused,
    )
    return PulledArtifact(
        reference=remote.reference,
        manifest_digest=remote.manifest_digest,
        config=remote.config.document,
        image=final,
        composefs_digest=cfs,
        bytes_downloaded=stats.bytes_downloaded,
        objects_fetched=stats.objects_fetched,
        objects_reused=reused,
    )
