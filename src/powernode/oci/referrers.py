"""OCI 1.1 referrers: attach artifacts to a manifest (``subject``) and find them again.

An attached artifact (provenance, SBOM, VEX, signature) is an image manifest
with ``artifactType``, the empty config (``application/vnd.oci.empty.v1+json``,
``{}``), one layer holding the document, and ``subject`` naming the module's
manifest (image-spec v1.1 "Guidelines for artifact usage").

Discovery (distribution-spec v1.1 "Listing Referrers"): ``GET
/v2/<name>/referrers/<digest>`` answers an image index of descriptors; a
registry without the API (the Debian docker-registry, distribution 2.8: 404)
is served by the *referrers tag schema*: the client keeps an image index under
the tag ``sha256-<hex>`` of the subject and adds each referrer's descriptor to
it. A registry that has the API says so by answering the manifest PUT with
an ``OCI-Subject`` header; we then skip the tag. An OCI layout has no API at
all, so it always gets the tag (in ``index.json``, as oras does). One lookup —
:func:`referrers` — lists signatures, SBOMs and attestations alike, filtered
by ``artifactType`` if asked.

The tag update is read-modify-write; two writers racing on one subject can
lose a descriptor (the spec's own caveat), so :func:`attach` re-reads the
index after writing and adds its descriptor again if it went missing,
bounded to a few rounds.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Final

import httpx

from powernode.errors import DataError
from powernode.oci.digest import Digest
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.errors import NotFoundError
from powernode.oci.mediatypes import MAX_MANIFEST_SIZE, OCI_EMPTY_CONFIG, OCI_INDEX, OCI_MANIFEST
from powernode.oci.refs import Reference
from powernode.oci.registry import Registry

log = logging.getLogger(__name__)

EMPTY: Final = b"{}"
EMPTY_DIGEST: Final = Digest.of_bytes(EMPTY)
PROVENANCE_TYPE: Final = "application/vnd.in-toto+json"
VEX_TYPE: Final = "application/vnd.openvex+json"
SBOM_TYPE: Final = "application/vnd.cyclonedx+json"
SIGNATURE_TYPE: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_LAYER: Final = "application/vnd.dsse.envelope.v1+json"
MAX_LAYER: Final = 16 * 1024 * 1024
TAG_ROUNDS: Final = 3


def fallback_tag(subject: Digest) -> str:
    """The referrers tag schema's tag: ``<alg>-<hex>``."""
    return f"{subject.algorithm}-{subject.hex}"


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(Digest.of_bytes(data)), "size": len(data)}


def artifact_manifest(
    subject: dict[str, object],
    artifact_type: str,
    layer_media_type: str,
    layer: bytes,
    annotations: dict[str, str] | None = None,
) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY_CONFIG, "digest": str(EMPTY_DIGEST), "size": 2},
        "layers": [_descriptor(layer_media_type, layer)],
        "subject": subject,
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def subject_descriptor(registry: Registry, repository: str, digest: Digest) -> dict[str, object]:
    """The descriptor of the manifest ``digest`` (fetched: its media type and size)."""
    m = registry.get_manifest(Reference(None, repository, None, digest))
    return {"mediaType": m.media_type, "digest": str(m.digest), "size": len(m.data)}


def attach(
    registry: Registry,
    repository: str,
    subject: Digest,
    *,
    artifact_type: str,
    layer_media_type: str,
    layer: bytes,
    annotations: dict[str, str] | None = None,
) -> Digest:
    """Push ``layer`` as an artifact referring to ``subject``; its manifest's digest."""
    if len(layer) > MAX_LAYER:
        raise DataError(f"the {artifact_type} document is over {MAX_LAYER} bytes")
    subj = subject_descriptor(registry, repository, subject)
    for data in (EMPTY, layer):
        registry.push_blob(repository, io.BytesIO(data), Digest.of_bytes(data), len(data))
    manifest = artifact_manifest(subj, artifact_type, layer_media_type, layer, annotations)
    digest = Digest.of_bytes(manifest)
    api = _push_and_probe(registry, Reference(None, repository, None, digest), manifest)
    if not api:
        entry = {**_descriptor(OCI_MANIFEST, manifest), "artifactType": artifact_type}
        if annotations:
            entry["annotations"] = dict(sorted(annotations.items()))
        _add_to_tag(registry, repository, subject, entry)
    log.info("attached %s %s to %s/%s", artifact_type, digest, repository, subject)
    return digest


def _push_and_probe(registry: Registry, ref: Reference, manifest: bytes) -> bool:
    """Push; True when the registry says it indexes ``subject`` itself (OCI-Subject)."""
    if not isinstance(registry, DistributionRegistry):
        registry.push_manifest(ref, manifest, OCI_MANIFEST)
        return False
    url = registry.manifest_url(ref)
    resp = registry.request(
        "PUT",
        url,
        key=f"{ref.repository}:pull,push",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    resp.close()
    if resp.status_code != 201:
        raise DataError(f"PUT {url}: HTTP {resp.status_code}; the registry refused the referrer")
    return "OCI-Subject" in resp.headers


def _read_tag_index(
    registry: Registry, repository: str, subject: Digest
) -> list[dict[str, object]]:
    try:
        m = registry.get_manifest(Reference(None, repository, fallback_tag(subject)))
    except NotFoundError:
        return []
    doc = json.loads(m.data)
    if not isinstance(doc, dict) or doc.get("mediaType", OCI_INDEX) != OCI_INDEX:
        raise DataError(
            f"{repository}:{fallback_tag(subject)} is not an image index; it is not a "
            "referrers tag and will not be overwritten"
        )
    manifests = doc.get("manifests") or []
    return [d for d in manifests if isinstance(d, dict)]


def _add_to_tag(
    registry: Registry,
    repository: str,
    subject: Digest,
    entry: dict[str, object],
) -> None:
    for _ in range(TAG_ROUNDS):
        entries = _read_tag_index(registry, repository, subject)
        if any(d.get("digest") == entry["digest"] for d in entries):
            return
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, entry]}
        data = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        if len(data) > MAX_MANIFEST_SIZE:
            raise DataError(f"the referrers index of {subject} would exceed {MAX_MANIFEST_SIZE}")
        registry.push_manifest(Reference(None, repository, fallback_tag(subject)), data, OCI_INDEX)
    if not any(
        d.get("digest") == entry["digest"] for d in _read_tag_index(registry, repository, subject)
    ):
        raise DataError(
            f"the referrers tag of {subject} kept losing {entry['digest']} to other writers"
        )


def referrers(
    registry: Registry, repository: str, subject: Digest, artifact_type: str | None = None
) -> list[dict[str, object]]:
    """The descriptors of the artifacts referring to ``subject``: the API, else the tag."""
    found: list[dict[str, object]] | None = None
    if isinstance(registry, DistributionRegistry):
        found = _api_referrers(registry, repository, subject)
    if found is None:
        found = _read_tag_index(registry, repository, subject)
    if artifact_type is not None:
        found = [d for d in found if d.get("artifactType") == artifact_type]
    return found


def _api_referrers(
    registry: DistributionRegistry, repository: str, subject: Digest
) -> list[dict[str, object]] | None:
    url: httpx.URL = registry.url(f"/v2/{repository}/referrers/{subject}")
    resp = registry.request("GET", url, key=f"{repository}:pull", headers={"Accept": OCI_INDEX})
    try:
        if resp.status_code == 404:
            return None  # no referrers API: the tag schema answers
        if resp.status_code != 200:
            raise registry.unexpected("GET", url, resp)
        doc = resp.json()
    finally:
        resp.close()
    return [d for d in doc.get("manifests") or [] if isinstance(d, dict)]


def fetch(
    registry: Registry, repository: str, descriptor: dict[str, object], subject: Digest
) -> tuple[dict[str, object], bytes]:
    """(manifest, its single layer's bytes) of a referrer, checked to refer to ``subject``.

    The manifest is fetched by digest and the layer verified against its
    descriptor (the registry client checks both digests), so what comes back is
    what the descriptor named; whether its content is *trusted* is the caller's
    signature check.
    """
    digest = Digest.parse(str(descriptor.get("digest")))
    m = registry.get_manifest(Reference(None, repository, None, digest))
    doc = json.loads(m.data)
    if (doc.get("subject") or {}).get("digest") != str(subject):
        raise DataError(f"referrer {digest} does not name {subject} as its subject")
    layers = doc.get("layers") or []
    if len(layers) != 1:
        raise DataError(f"referrer {digest} has {len(layers)} layers, expected 1")
    layer = layers[0]
    size = int(layer.get("size", -1))
    if not 0 <= size <= MAX_LAYER:
        raise DataError(f"referrer {digest}: layer size {size} is out of bounds")
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.pull_blob_to(
            repository, Digest.parse(layer["digest"]), Path(tmp) / "layer", size=size
        )
        return doc, path.read_bytes()
