"""Media types and limits shared by the OCI backends (OCI image spec v1.1)."""

from __future__ import annotations

from typing import NamedTuple

from powernode.oci.digest import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

# The distribution spec says registries SHOULD accept manifests up to 4 MiB;
# anything larger from a remote is refused unread.
MAX_MANIFEST_SIZE = 4 << 20

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


class Manifest(NamedTuple):
    """A manifest as fetched: the exact bytes, their media type and digest."""

    data: bytes
    media_type: str
    digest: Digest
