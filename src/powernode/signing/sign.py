"""Signing a manifest digest and laying signatures out as cosign stores them.

cosign ``specs/SIGNATURE_SPEC.md`` ("Storage"): the signatures of the
manifest ``sha256:<hex>`` live in the same repository under the tag
``sha256-<hex>.sig``, as an OCI image manifest whose config has media type
``application/vnd.oci.image.config.v1+json`` and whose layers are the
payloads (``application/vnd.dev.cosign.simplesigning.v1+json``), one layer
per signature, with annotations:

- ``dev.cosignproject.cosign/signature``: base64 of the signature;
- ``dev.sigstore.cosign/certificate``: the signing certificate (keyless);
- ``dev.sigstore.cosign/chain``: its chain up to the root (keyless);
- ``dev.sigstore.cosign/bundle``: the transparency log's bundle, the proof
  of when the signature was made (keyless; ``signing/tlog.py``).

Nothing here does registry I/O: the OCI client pushes what
:func:`signature_manifest` returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization

from powernode.signing import certs
from powernode.signing.errors import CertificateError, SigningSetupError
from powernode.signing.keys import PrivateKey, check_key_type, key_fingerprint
from powernode.signing.payload import MEDIA_TYPE, build_payload, check_manifest_digest
from powernode.signing.scheme import sign_bytes
from powernode.signing.tlog import BUNDLE_ANNOTATION

log = logging.getLogger(__name__)

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class Signature:
    """One signature: the payload bytes and what the layer's annotations carry."""

    payload: bytes
    signature_b64: str
    certificate_pem: bytes | None = None
    chain_pem: bytes | None = None
    bundle: str | None = None  # a transparency log's bundle (JSON), as cosign attaches it


class Layer(NamedTuple):
    """A layer of a signature manifest: media type, blob, annotations."""

    media_type: str
    data: bytes
    annotations: dict[str, str]


def sign_manifest_digest(
    repo: str,
    manifest_digest: str,
    key: PrivateKey,
    *,
    annotations: Mapping[str, str] | None = None,
    certificate_pem: bytes | None = None,
    chain_pem: bytes | None = None,
) -> Signature:
    """Sign the simple-signing payload for ``repo`` at ``manifest_digest``.

    With ``certificate_pem`` (and optionally ``chain_pem``) the signature is a
    certificate-carrying ("keyless"-style) one; the certificate must certify
    ``key``.
    """
    check_key_type(key, "signing key")
    if chain_pem is not None and certificate_pem is None:
        raise SigningSetupError("a certificate chain was given without a certificate")
    if certificate_pem is not None:
        _check_certificate_matches(certificate_pem, key)
        if chain_pem is not None:
            try:
                certs.load_certificates(chain_pem, "certificate chain")
            except CertificateError as e:
                raise SigningSetupError(str(e)) from e
    payload = build_payload(repo, manifest_digest, annotations)
    signature = base64.b64encode(sign_bytes(key, payload)).decode()
    log.info("signed %s@%s with %s", repo, manifest_digest, key_fingerprint(key))
    return Signature(payload, signature, certificate_pem, chain_pem)


def signature_tag(manifest_digest: str) -> str:
    """The tag cosign stores signatures under: ``sha256-<hex>.sig``."""
    check_manifest_digest(manifest_digest)
    algorithm, hex_ = manifest_digest.split(":", 1)
    return f"{algorithm}-{hex_}.sig"


def signature_layer(signature: Signature) -> Layer:
    """The layer that carries one signature."""
    annotations = {SIGNATURE_ANNOTATION: signature.signature_b64}
    if signature.certificate_pem is not None:
        annotations[CERTIFICATE_ANNOTATION] = signature.certificate_pem.decode("ascii")
    if signature.chain_pem is not None:
        annotations[CHAIN_ANNOTATION] = signature.chain_pem.decode("ascii")
    if signature.bundle is not None:
        annotations[BUNDLE_ANNOTATION] = signature.bundle
    return Layer(MEDIA_TYPE, signature.payload, annotations)


def signature_from_layer(layer: Layer) -> Signature:
    """The signature a layer carries (unverified), e.g. to append to an existing ``.sig``."""
    certificate = layer.annotations.get(CERTIFICATE_ANNOTATION)
    chain = layer.annotations.get(CHAIN_ANNOTATION)
    return Signature(
        payload=layer.data,
        signature_b64=layer.annotations.get(SIGNATURE_ANNOTATION, ""),
        certificate_pem=certificate.encode() if certificate is not None else None,
        chain_pem=chain.encode() if chain is not None else None,
        bundle=layer.annotations.get(BUNDLE_ANNOTATION),
    )


def signature_manifest(
    signatures: Sequence[Signature],
) -> tuple[dict[str, object], bytes, list[Layer]]:
    """The OCI manifest, config blob and layers to push under :func:`signature_tag`.

    Duplicates are dropped (cosign does the same when a signature is added
    twice); order is kept so an existing ``.sig`` can be extended.
    """
    unique: list[Signature] = []
    for signature in signatures:
        if signature not in unique:
            unique.append(signature)
    if not unique:
        raise SigningSetupError("a signature manifest needs at least one signature")
    layers = [signature_layer(s) for s in unique]
    digests = [_digest(layer.data) for layer in layers]
    config = _config(digests)
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": _digest(config)},
        "layers": [
            {
                "mediaType": layer.media_type,
                "size": len(layer.data),
                "digest": digest,
                "annotations": layer.annotations,
            }
            for layer, digest in zip(layers, digests, strict=True)
        ],
    }
    return manifest, config, layers


def _config(diff_ids: list[str]) -> bytes:
    # The image config go-containerregistry writes for cosign's signature
    # image (empty.Image plus one uncompressed layer per signature).
    zero = "0001-01-01T00:00:00Z"
    document = {
        "architecture": "",
        "created": zero,
        "history": [{"created": zero} for _ in diff_ids],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_certificate_matches(certificate_pem: bytes, key: PrivateKey) -> None:
    try:
        cert = certs.load_certificate(certificate_pem, "signing certificate")
    except CertificateError as e:
        raise SigningSetupError(str(e)) from e
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise SigningSetupError(
            f"the signing certificate ({certs.describe(cert)}) certifies another key than "
            f"{key_fingerprint(key)}; sign with the key the certificate was issued for"
        )
