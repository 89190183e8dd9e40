"""Sign a module artifact in a registry, and verify one against a trust policy.

Signatures use cosign's layout (docs/signing.md): the manifest tagged
``sha256-<hex>.sig`` in the artifact's repository. :func:`sign_artifact`
appends to an existing ``.sig`` (as cosign does), so several signers and
key rotation work.

:func:`verify_artifact` is what the platform's ingest and the agent call:
the signature per the required policy (on the manifest digest, for this
repository), then the manifest's structure, module.json, the index, and
the composefs image's digest and object set. It returns what it verified
or raises; a caller never sees a half-checked artifact.

The signed repository name is the one cosign would sign:
``<registry host[:port]>/<repository>`` for a distribution registry (the
host from the reference, else from the registry URL) and the bare
repository for an image-layout directory.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import DataError
from powernode.oci.cache import BlobCache
from powernode.oci.digest import Digest
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.errors import NotFoundError
from powernode.oci.mediatypes import OCI_MANIFEST
from powernode.oci.refs import Reference
from powernode.oci.registry import Registry
from powernode.publish.format import FormatLimits, loads_object
from powernode.publish.remote import RemoteArtifact, fetch_artifact, fetch_image, read_blob
from powernode.signing.keys import PrivateKey
from powernode.signing.policy import Signer, TrustPolicy
from powernode.signing.sign import (
    Layer,
    Signature,
    sign_manifest_digest,
    signature_from_layer,
    signature_manifest,
    signature_tag,
)
from powernode.signing.verify import MAX_SIGNATURES, verify_signatures

log = logging.getLogger(__name__)

MAX_SIGNATURE_LAYER = 64 << 10  # payloads are ~250 bytes (signing/payload.py limit)


@dataclass(frozen=True)
class VerifiedArtifact:
    """A module artifact whose signature, manifest, config and image all checked out."""

    reference: Reference  # pinned: repository@manifest digest
    manifest_digest: Digest
    config: dict[str, object]  # module.json
    composefs_digest: Digest
    signer: Signer
    file_list: tuple[str, ...]  # every path in the image but /, sorted
    sbom_digest: Digest

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def version(self) -> str:
        return str(self.config["version"])

    @property
    def manifest(self) -> dict[str, object]:
        """The canonical manifest.json dict carried in module.json."""
        value = self.config.get("manifest")
        return value if isinstance(value, dict) else {}

    @property
    def signer_identity(self) -> str | None:
        return self.signer.identity

    @property
    def signer_issuer(self) -> str | None:
        return self.signer.issuer


def signed_repository(registry: Registry, ref: Reference) -> str:
    """The repository name a signature's payload names (cosign's docker-reference)."""
    if ref.registry is not None:
        return f"{ref.registry}/{ref.repository}"
    if isinstance(registry, DistributionRegistry):
        url = registry.base_url
        host = f"[{url.host}]" if ":" in url.host else url.host
        return f"{host}:{url.port}/{ref.repository}" if url.port else f"{host}/{ref.repository}"
    return ref.repository


def _signature_layers(
    registry: Registry, ref: Reference, manifest_digest: Digest, cache: BlobCache
) -> list[Layer]:
    """The layers under the ``.sig`` tag (empty when there is none), blobs fetched and verified."""
    sig_ref = ref.with_tag(signature_tag(str(manifest_digest)))
    try:
        fetched = registry.get_manifest(sig_ref)
    except NotFoundError:
        return []
    doc = loads_object(fetched.data, f"signature manifest {sig_ref}")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise DataError(f"signature manifest {sig_ref}: 'layers' is not a list")
    if len(raw_layers) > MAX_SIGNATURES:
        raise DataError(
            f"signature manifest {sig_ref}: {len(raw_layers)} layers exceed {MAX_SIGNATURES}"
        )
    layers: list[Layer] = []
    for i, raw in enumerate(raw_layers):
        where = f"signature manifest {sig_ref}: layers[{i}]"
        if not isinstance(raw, dict):
            raise DataError(f"{where}: not a descriptor")
        size = raw.get("size")
        if not isinstance(size, int) or not 0 <= size <= MAX_SIGNATURE_LAYER:
            raise DataError(f"{where}: size {size!r} is not in 0..{MAX_SIGNATURE_LAYER}")
        digest_text = raw.get("digest")
        digest = Digest.parse(digest_text if isinstance(digest_text, str) else "")
        path = registry.pull_blob_to(ref.repository, digest, cache, size=size)
        data = path.read_bytes()
        if Digest.of_bytes(data) != digest:
            path.unlink(missing_ok=True)
            raise DataError(f"{where}: cached blob {path} does not match {digest}")
        notes = raw.get("annotations") or {}
        media_type = raw.get("mediaType")
        layers.append(
            Layer(
                media_type if isinstance(media_type, str) else "",
                data,
                notes if isinstance(notes, dict) else {},
            )
        )
    return layers


def sign_artifact(
    registry: Registry,
    ref: Reference,
    key: PrivateKey,
    *,
    certificate_pem: bytes | None = None,
    chain_pem: bytes | None = None,
    annotations: dict[str, str] | None = None,
) -> Digest:
    """Sign the manifest ``ref`` resolves to; return the digest of the ``.sig`` manifest.

    Existing signatures under the tag are kept (a re-sign with the same
    signature is a no-op). ``certificate_pem``/``chain_pem`` make a
    certificate ("keyless"-style) signature.
    """
    manifest_digest = registry.get_manifest(ref).digest
    repo = signed_repository(registry, ref)
    with tempfile.TemporaryDirectory(prefix="powernode-sign-") as tmp:
        cache = BlobCache(Path(tmp))
        existing = [
            signature_from_layer(layer)
            for layer in _signature_layers(registry, ref, manifest_digest, cache)
        ]
        new = sign_manifest_digest(
            repo,
            str(manifest_digest),
            key,
            annotations=annotations,
            certificate_pem=certificate_pem,
            chain_pem=chain_pem,
        )
        signatures: list[Signature] = [*existing, new]
        manifest, config, layers = signature_manifest(signatures)
        blobs = [config, *(layer.data for layer in layers)]
        for i, data in enumerate(blobs):
            path = Path(tmp) / f"blob-{i}"
            path.write_bytes(data)
            registry.push_blob(ref.repository, path, Digest.of_bytes(data), len(data))
    data = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    sig_ref = ref.with_tag(signature_tag(str(manifest_digest)))
    digest = registry.push_manifest(sig_ref, data, OCI_MANIFEST)
    log.info("signed %s@%s (%s)", repo, manifest_digest, sig_ref)
    return digest


def verify_artifact(
    registry: Registry,
    ref: Reference,
    policy: TrustPolicy,
    *,
    limits: FormatLimits | None = None,
    match_reference: bool = True,
) -> VerifiedArtifact:
    """Verify the artifact ``ref`` names: signature under ``policy``, then its content.

    ``match_reference=False`` accepts a signature made for another repository
    (a mirror); the manifest digest must always match. Raises
    ``VerificationError`` (untrusted, tampered), ``DataError`` (malformed),
    ``TransportError`` (registry trouble); returns only when all checks passed.
    """
    limits = limits or FormatLimits()
    manifest_digest = registry.get_manifest(ref).digest
    pinned = Reference(ref.registry, ref.repository, None, manifest_digest)
    with tempfile.TemporaryDirectory(prefix="powernode-verify-") as tmp:
        cache = BlobCache(Path(tmp) / "blobs")
        layers = _signature_layers(registry, pinned, manifest_digest, cache)
        verified = verify_signatures(
            signed_repository(registry, ref),
            str(manifest_digest),
            [(layer.media_type, layer.data, layer.annotations) for layer in layers],
            policy,
            match_reference=match_reference,
        )
        # The signature covers the manifest digest; everything below hangs off it.
        remote = fetch_artifact(registry, pinned, cache, limits)
        image = fetch_image(registry, remote, Path(tmp) / "image.cfs", limits)
        files = tuple(sorted(e.path_str for e in image.walk() if e.path != b"/"))
        read_blob(registry, ref.repository, remote.manifest.sbom, cache, limits.max_sbom)
    return _result(remote, verified.signer, files)


def _result(remote: RemoteArtifact, signer: Signer, files: tuple[str, ...]) -> VerifiedArtifact:
    log.info("verified %s (signed by %s)", remote.reference, signer)
    return VerifiedArtifact(
        reference=remote.reference,
        manifest_digest=remote.manifest_digest,
        config=remote.config.document,
        composefs_digest=remote.config.composefs_digest,
        signer=signer,
        file_list=files,
        sbom_digest=remote.manifest.sbom.digest,
    )
