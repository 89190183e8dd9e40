"""Garbage collection of the node's module store (``powernode-agent modules gc``).

Kept (``AttachState.retained``): every attached module's image, every image
of the union being served, and each attached module's rollback version (the
one attached before its last change), like bootc keeps its rollback
deployment; plus every object those images redirect to and the OCI blobs
(manifest, module.json, pack index, SBOM) of the manifests whose module.json
names a kept image. Everything else under ``images/``, ``objects/`` and
``blobs/sha256/`` is removed, and leftover ``.partial-*`` temporaries older
than the grace period.

Why it is safe while a union is mounted and while the service runs:

- it holds the store lock exclusively (pulls hold it shared from their first
  write to the mount that uses it: a pull never finds an object present,
  skips it, and then loses it) and the state lock (no restack meanwhile);
- it removes only images no attached, mounted or rollback module names, and
  only objects none of the kept images redirects to; overlayfs reads the
  data-only lower (``<state>/objects``) only through those redirects
  (Documentation/filesystems/overlayfs.rst, "Data-only lower layers");
- images go first (their directory fsynced), objects last, so a crash in
  between leaves the store's invariant (an image's objects are present)
  true for every image left;
- a kept image that cannot be read or parsed stops the collection before
  anything is removed: its objects could not be told apart from garbage.

Each removal is one ``unlink`` (atomic); there is nothing to roll back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from powernode.agent.modules.integrity import MAX_IMAGE_BYTES
from powernode.agent.modules.layout import NodeLayout
from powernode.durable import fsync_dir
from powernode.errors import DataError, ImageFormatError
from powernode.node import layout as names
from powernode.verity.composefs.reader import Image

log = logging.getLogger(__name__)

GRACE_SECONDS = 3600.0  # a .partial- file younger than this may belong to a pull elsewhere
MAX_BLOB_PARSE = 4 << 20  # manifests and module.json are small; larger blobs are neither
PARTIAL = ".partial-"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_HEX62 = re.compile(r"[0-9a-f]{62}")


@dataclass
class GcReport:
    """What ``collect`` removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    retained: dict[str, str]  # composefs hex -> why (module, version, attached/rollback)
    images: list[str] = field(default_factory=list)  # composefs hex digests removed
    objects: int = 0
    blobs: int = 0
    partials: int = 0
    bytes_freed: int = 0
    kept_objects: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "retained": [
                {"digest": f"sha256:{h}", "why": w} for h, w in sorted(self.retained.items())
            ],
            "images_removed": [f"sha256:{h}" for h in self.images],
            "objects_removed": self.objects,
            "blobs_removed": self.blobs,
            "partials_removed": self.partials,
            "bytes_freed": self.bytes_freed,
            "objects_kept": self.kept_objects,
        }


def collect(
    layout: NodeLayout,
    *,
    dry_run: bool = False,
    grace_seconds: float = GRACE_SECONDS,
    now: Callable[[], float] = time.time,
    lock_timeout: float = 600.0,
) -> GcReport:
    """Remove what no retained version references; DataError (nothing removed) if a kept
    image cannot be read; ConfigError if a pull holds the store lock past ``lock_timeout``."""
    state_file = layout.state_file
    with (
        state_file.store_locked(exclusive=True, timeout=lock_timeout),
        state_file.locked(timeout=lock_timeout),
    ):
        retained = state_file.load().retained()
        keep_objects = _kept_objects(layout, retained)
        report = GcReport(dry_run, retained, kept_objects=len(keep_objects))
        cutoff = now() - grace_seconds
        _images(layout, retained, report, cutoff)
        _blobs(layout, retained, report, cutoff)
        _objects(layout, keep_objects, report, cutoff)
    log.info(
        "gc%s: %d image(s), %d object(s), %d blob(s), %d partial(s), %d bytes; %d kept",
        " (dry run)" if dry_run else "",
        len(report.images),
        report.objects,
        report.blobs,
        report.partials,
        report.bytes_freed,
        len(retained),
    )
    return report


def _kept_objects(layout: NodeLayout, retained: dict[str, str]) -> set[str]:
    keep: set[str] = set()
    for hex_digest, why in sorted(retained.items()):
        path = layout.store.images_dir / names.image_name(hex_digest)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_IMAGE_BYTES + 1)
        except FileNotFoundError:
            continue  # not in the store: nothing of it to keep
        except OSError as e:
            raise DataError(
                f"gc: {path} ({why}): cannot read: {e.strerror}; nothing removed"
            ) from e
        try:
            if len(data) > MAX_IMAGE_BYTES:
                raise ImageFormatError(f"larger than {MAX_IMAGE_BYTES} bytes")
            keep |= Image.from_bytes(data, source=str(path)).objects()
        except ImageFormatError as e:
            raise DataError(
                f"gc: {path} ({why}) is not a readable composefs image ({e}); nothing was "
                "removed: run 'powernode-agent modules verify', detach or re-pull it, then gc"
            ) from e
    return keep


def _remove(path: Path, report: GcReport) -> None:
    try:
        size = path.lstat().st_size
        if not report.dry_run:
            path.unlink()
    except FileNotFoundError:
        return
    report.bytes_freed += size


def _partial(path: Path, report: GcReport, cutoff: float) -> None:
    try:
        old = path.lstat().st_mtime < cutoff
    except FileNotFoundError:
        return
    if old:
        _remove(path, report)
        report.partials += 1


def _entries(directory: Path) -> Iterator[Path]:
    try:
        yield from sorted(directory.iterdir())
    except FileNotFoundError:
        return


def _images(layout: NodeLayout, retained: dict[str, str], report: GcReport, cutoff: float) -> None:
    images_dir = layout.store.images_dir
    seals = layout.seals()
    for path in _entries(images_dir):
        if path.name.startswith(PARTIAL):
            _partial(path, report, cutoff)
        elif path.suffix == names.IMAGE_SUFFIX and _HEX64.fullmatch(path.stem):
            if path.stem not in retained:
                _remove(path, report)
                report.images.append(path.stem)
                if not report.dry_run:
                    seals.drop(path.stem)
        else:
            log.warning("gc: %s is not a store entry; left alone", path)
    if report.images and not report.dry_run:
        fsync_dir(images_dir)  # images gone for good before any of their objects go


def _read_json(path: Path) -> object:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BLOB_PARSE + 1)
        return None if len(raw) > MAX_BLOB_PARSE else json.loads(raw)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _digest_hex(descriptor: object) -> str | None:
    if not isinstance(descriptor, dict):
        return None
    d = descriptor.get("digest")
    if isinstance(d, str) and d.startswith("sha256:") and _HEX64.fullmatch(d[7:]):
        return d[7:]
    return None


def _blobs(layout: NodeLayout, retained: dict[str, str], report: GcReport, cutoff: float) -> None:
    blob_dir = layout.store.blobs_dir / "sha256"
    names = [p for p in _entries(blob_dir) if _HEX64.fullmatch(p.name)]
    keep: set[str] = set()
    for path in names:
        doc = _read_json(path)
        # An OCI manifest (image-spec manifest.md): config + layers descriptors.
        if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
            continue
        config = _digest_hex(doc.get("config"))
        module = _read_json(blob_dir / config) if config else None
        cfs = module.get("composefs_digest") if isinstance(module, dict) else None
        if isinstance(cfs, str) and cfs.removeprefix("sha256:") in retained:
            keep.add(path.name)
            keep |= {h for h in map(_digest_hex, [doc.get("config"), *doc["layers"]]) if h}
    for path in _entries(blob_dir):
        if path.name.startswith(PARTIAL):
            _partial(path, report, cutoff)
        elif _HEX64.fullmatch(path.name) and path.name not in keep:
            _remove(path, report)
            report.blobs += 1


def _objects(layout: NodeLayout, keep: set[str], report: GcReport, cutoff: float) -> None:
    for sub in _entries(layout.store.objects_dir):
        if not _HEX2.fullmatch(sub.name) or not sub.is_dir():
            continue
        for path in _entries(sub):
            if path.name.startswith(PARTIAL):
                _partial(path, report, cutoff)
            elif _HEX62.fullmatch(path.name) and f"{sub.name}/{path.name}" not in keep:
                _remove(path, report)
                report.objects += 1
