"""The one seam between powernode and OCI storage, and how to open a backend.

Two backends implement :class:`Registry`:

* :class:`~powernode.oci.layout.LayoutRegistry`: an OCI image-layout
  directory (the embedded default; image-spec ``image-layout.md``);
* :class:`~powernode.oci.distribution.DistributionRegistry`: a registry
  speaking the OCI distribution spec v1.1 over HTTP(S).

Blobs are addressed per repository (a registry scopes them so; the layout
keeps one shared ``blobs/`` directory). Pulls land either at a path or in a
:class:`~powernode.oci.cache.BlobCache`, verified, atomically.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from powernode.errors import ConfigError
from powernode.oci.cache import BlobCache, Readable
from powernode.oci.digest import Digest
from powernode.oci.distribution import Credentials, DistributionRegistry
from powernode.oci.layout import LayoutRegistry
from powernode.oci.mediatypes import Manifest
from powernode.oci.refs import Reference


@runtime_checkable
class Registry(Protocol):
    """Where artifacts are pushed and pulled. Every method raises, never returns a bool flag
    for failure; :meth:`blob_exists` answers a question."""

    def blob_exists(self, repository: str, digest: Digest) -> bool: ...

    def push_blob(
        self,
        repository: str,
        source: Path | Readable,
        digest: Digest,
        size: int,
        *,
        mount_from: str | None = None,
    ) -> None:
        """Store ``size`` bytes from ``source`` under ``digest``; verified before commit.

        ``mount_from`` names another repository that may already hold the blob.
        """
        ...

    def pull_blob_to(
        self,
        repository: str,
        digest: Digest,
        target: Path | BlobCache,
        *,
        size: int | None = None,
    ) -> Path:
        """Stream the blob to ``target`` (a file path, or the cache, skipped if present)."""
        ...

    def read_blob_range(
        self, repository: str, digest: Digest, offset: int, length: int
    ) -> Iterator[bytes]:
        """Bytes ``[offset, offset+length)`` of a blob in chunks, NOT verified (a part
        cannot be checked against the blob digest; callers verify by other means).

        Raises :class:`~powernode.oci.errors.RangeNotSupportedError` when the
        registry ignores ``Range`` (the caller then fetches the whole blob).
        """
        ...

    def push_manifest(self, ref: Reference, data: bytes, media_type: str) -> Digest: ...

    def get_manifest(self, ref: Reference) -> Manifest: ...

    def list_tags(self, repository: str) -> list[str]: ...

    def delete_manifest(self, ref: Reference) -> None:
        """Delete the manifest ``ref`` resolves to, and every tag pointing at it."""
        ...


def open_registry(
    target: str | Path,
    *,
    credentials: Credentials | None = None,
) -> LayoutRegistry | DistributionRegistry:
    """Open ``http(s)://host[:port]`` as a distribution registry, anything else as a layout.

    A layout path may be written ``oci:PATH`` (skopeo's transport syntax).
    """
    text = str(target)
    if text.startswith(("http://", "https://")):
        return DistributionRegistry(text, credentials=credentials)
    if "://" in text:
        raise ConfigError(
            f"unsupported registry URL {text!r}: use http://, https:// or a directory path"
        )
    if credentials is not None:
        raise ConfigError(
            f"credentials given for the layout directory {text!r}; they apply to URLs"
        )
    return LayoutRegistry(Path(text.removeprefix("oci:")))
