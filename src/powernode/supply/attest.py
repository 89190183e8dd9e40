"""Provenance, VEX, SBOMs and signatures as OCI referrers of a module, and their checks.

Each is attached with :func:`powernode.oci.referrers.attach` (``subject`` the
module's manifest) and found by one :func:`powernode.oci.referrers.referrers`
lookup. Provenance and VEX travel as DSSE envelopes (layer media type
``application/vnd.dsse.envelope.v1+json``), the SBOM as CycloneDX JSON, a
signature as cosign's simple-signing payload with its signature annotation.

cosign compatibility: ``cosign attest`` (without ``--registry-referrers-mode``)
stores attestations under the tag ``sha256-<hex>.att``: an image manifest
whose layers are DSSE envelopes with a ``predicateType`` annotation (and,
keyless, the ``dev.sigstore.cosign/certificate``/``chain``/``bundle``
annotations), the config the one go-containerregistry writes for cosign's
signature images. :func:`verify_provenance` reads both places;
:func:`attach_cosign_attestation` writes the ``.att`` form for
``cosign verify-attestation``.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from powernode.errors import DataError, VerificationError
from powernode.oci import referrers as refs
from powernode.oci.digest import Digest
from powernode.oci.errors import NotFoundError
from powernode.oci.mediatypes import OCI_MANIFEST
from powernode.oci.refs import Reference
from powernode.oci.registry import Registry
from powernode.signing.errors import SignatureInvalidError
from powernode.signing.policy import Signer, TrustPolicy
from powernode.signing.sign import SIGNATURE_ANNOTATION, Signature
from powernode.supply import dsse, provenance

PREDICATE_ANNOTATION: Final = "predicateType"
INTOTO_PREDICATE_ANNOTATION: Final = "in-toto.io/predicate-type"
CERT_ANNOTATION: Final = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION: Final = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION: Final = "dev.sigstore.cosign/bundle"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class VerifiedProvenance:
    signer: Signer
    provenance: provenance.Provenance
    source: str  # "referrer sha256:…" or "cosign .att layer N"


def attach_provenance(
    registry: Registry, repository: str, subject: Digest, envelope: dsse.Envelope
) -> Digest:
    return refs.attach(
        registry,
        repository,
        subject,
        artifact_type=refs.PROVENANCE_TYPE,
        layer_media_type=refs.DSSE_LAYER,
        layer=envelope.to_bytes(),
        annotations={INTOTO_PREDICATE_ANNOTATION: provenance.SLSA_PROVENANCE_V1},
    )


def attach_vex(
    registry: Registry, repository: str, subject: Digest, envelope: dsse.Envelope
) -> Digest:
    return refs.attach(
        registry,
        repository,
        subject,
        artifact_type=refs.VEX_TYPE,
        layer_media_type=refs.DSSE_LAYER,
        layer=envelope.to_bytes(),
    )


def attach_sbom(registry: Registry, repository: str, subject: Digest, sbom: bytes) -> Digest:
    return refs.attach(
        registry,
        repository,
        subject,
        artifact_type=refs.SBOM_TYPE,
        layer_media_type=refs.SBOM_TYPE,
        layer=sbom,
    )


def attach_signature(
    registry: Registry, repository: str, subject: Digest, signature: Signature
) -> Digest:
    """The cosign signature as a referrer (the ``.sig`` tag stays what ingest reads)."""
    return refs.attach(
        registry,
        repository,
        subject,
        artifact_type=refs.SIGNATURE_TYPE,
        layer_media_type=refs.SIGNATURE_TYPE,
        layer=signature.payload,
        annotations={SIGNATURE_ANNOTATION: signature.signature_b64},
    )


def find_sbom(registry: Registry, repository: str, subject: Digest) -> bytes:
    """The first SBOM attached to ``subject``; NotFoundError when there is none."""
    for d in refs.referrers(registry, repository, subject, refs.SBOM_TYPE):
        return refs.fetch(registry, repository, d, subject)[1]
    raise NotFoundError(f"{repository}@{subject} has no SBOM referrer")


def cosign_attestation_tag(subject: Digest) -> str:
    return f"{subject.algorithm}-{subject.hex}.att"


def _go_config(diff_ids: list[str]) -> bytes:
    # The config go-containerregistry writes for cosign's signature and attestation
    # images (empty.Image plus one uncompressed layer each), as signing/sign.py does.
    zero = "0001-01-01T00:00:00Z"
    doc = {
        "architecture": "",
        "created": zero,
        "history": [{"created": zero} for _ in diff_ids],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def attach_cosign_attestation(
    registry: Registry,
    repository: str,
    subject: Digest,
    envelope: dsse.Envelope,
    predicate_type: str = provenance.SLSA_PROVENANCE_V1,
    *,
    certificate_pem: bytes | None = None,
    chain_pem: bytes | None = None,
) -> Digest:
    """Add ``envelope`` to the ``sha256-<hex>.att`` manifest, cosign's attestation form.

    Signed keylessly, the signing certificate (and chain) travel as the layer's
    ``dev.sigstore.cosign/certificate`` and ``…/chain`` annotations, as cosign
    writes them.
    """
    ref = Reference(None, repository, cosign_attestation_tag(subject))
    layers: list[tuple[bytes, dict[str, str]]] = []
    try:
        old = json.loads(registry.get_manifest(ref).data)
        for i, layer in enumerate(old.get("layers") or []):
            layers.append(
                (_blob(registry, repository, layer, i), dict(layer.get("annotations") or {}))
            )
    except NotFoundError:
        pass
    data = envelope.to_bytes()
    if all(d != data for d, _ in layers):
        # cosign's static.NewAttestation: the signature lives in the envelope, the
        # annotation is present and empty (verify-attestation requires it).
        ann = {SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: predicate_type}
        if certificate_pem is not None:
            ann[CERT_ANNOTATION] = certificate_pem.decode("ascii")
        if chain_pem is not None:
            ann[CHAIN_ANNOTATION] = chain_pem.decode("ascii")
        layers.append((data, ann))
    digests = [str(Digest.of_bytes(d)) for d, _ in layers]
    config = _go_config(digests)
    for blob in (config, *(d for d, _ in layers)):
        registry.push_blob(repository, io.BytesIO(blob), Digest.of_bytes(blob), len(blob))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "size": len(config),
            "digest": str(Digest.of_bytes(config)),
        },
        "layers": [
            {"mediaType": refs.DSSE_LAYER, "size": len(d), "digest": dg, "annotations": ann}
            for (d, ann), dg in zip(layers, digests, strict=True)
        ],
    }
    return registry.push_manifest(ref, json.dumps(manifest).encode(), OCI_MANIFEST)


def _blob(registry: Registry, repository: str, layer: dict[str, object], i: int) -> bytes:
    size = int(str(layer.get("size", -1)))
    if not 0 <= size <= refs.MAX_LAYER:
        raise DataError(f"attestation layer {i}: size {size} is out of bounds")
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.pull_blob_to(
            repository, Digest.parse(str(layer.get("digest"))), Path(tmp) / "l", size=size
        )
        return path.read_bytes()


def _candidates(
    registry: Registry, repository: str, subject: Digest
) -> list[tuple[str, bytes, dict[str, str]]]:
    """(source, envelope bytes, annotations) from the referrers and cosign's ``.att`` tag."""
    out: list[tuple[str, bytes, dict[str, str]]] = []
    for d in refs.referrers(registry, repository, subject, refs.PROVENANCE_TYPE):
        doc, data = refs.fetch(registry, repository, d, subject)
        ann = _annotations(doc)
        out.append((f"referrer {d.get('digest')}", data, ann))
    try:
        att = json.loads(
            registry.get_manifest(Reference(None, repository, cosign_attestation_tag(subject))).data
        )
    except NotFoundError:
        return out
    for i, layer in enumerate(att.get("layers") or []):
        if layer.get("mediaType") == refs.DSSE_LAYER:
            ann = dict(layer.get("annotations") or {})
            out.append((f"cosign .att layer {i + 1}", _blob(registry, repository, layer, i), ann))
    return out


def verify_provenance(
    registry: Registry, repository: str, subject: Digest, trust: TrustPolicy
) -> list[VerifiedProvenance]:
    """Every SLSA provenance of ``subject`` that ``trust`` verifies; raise when none does.

    A tampered envelope (its payload or type changed after signing), one
    signed by another key, or one whose statement names another digest is
    refused; the error lists each refusal.
    """
    good: list[VerifiedProvenance] = []
    refused: list[str] = []
    for source, data, ann in _candidates(registry, repository, subject):
        try:
            env = dsse.parse(data)
            cert, chain = ann.get(CERT_ANNOTATION), ann.get(CHAIN_ANNOTATION)
            signer = dsse.verify(
                env,
                trust,
                certificate_pem=cert.encode() if cert else None,
                chain_pem=chain.encode() if chain else None,
                bundle=ann.get(BUNDLE_ANNOTATION),
            )
            prov = provenance.parse(env)
        except (dsse.EnvelopeError, provenance.ProvenanceError, VerificationError) as e:
            refused.append(f"{source}: {e}")
            continue
        if prov.subject_digest != str(subject):
            refused.append(f"{source}: the statement is about {prov.subject_digest}")
            continue
        good.append(VerifiedProvenance(signer, prov, source))
    if not good:
        why = "; ".join(refused) if refused else "none is attached"
        raise SignatureInvalidError(f"no provenance of {repository}@{subject} verifies: {why}")
    return good


def _annotations(doc: Mapping[str, object]) -> dict[str, str]:
    """A referrer's annotations: the manifest's (refs.attach), then its layer's (cosign)."""
    top = doc.get("annotations")
    out = {str(k): str(v) for k, v in top.items()} if isinstance(top, dict) else {}
    return out | _layer_annotations(doc)


def _layer_annotations(doc: Mapping[str, object]) -> dict[str, str]:
    """The first layer's annotations of a manifest (JSON), as text."""
    layers = doc.get("layers")
    first = layers[0] if isinstance(layers, list) and layers else {}
    ann = first.get("annotations") if isinstance(first, dict) else None
    return {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {}


MAX_REFERRERS: Final = 64
_KINDS: Final = {
    refs.PROVENANCE_TYPE: "provenance",
    refs.VEX_TYPE: "vex",
    refs.SBOM_TYPE: "sbom",
    refs.SIGNATURE_TYPE: "signature",
}


@dataclass(frozen=True)
class FoundEvidence:
    """One referrer of a subject, as the platform's evidence API takes it (not yet verified)."""

    kind: str  # sbom, provenance, vex, signature
    body: dict[str, object]
    source: str  # "referrer sha256:…"


def collect_evidence(
    registry: Registry, repository: str, subject: Digest
) -> tuple[list[FoundEvidence], list[str]]:
    """(evidence, skipped) among ``subject``'s referrers: one lookup, the tag schema's fallback.

    Nothing is trusted here: the platform verifies each body as it verifies
    one attached through its API. A referrer that is not JSON, or of another
    artifact type, is skipped with its reason; at most MAX_REFERRERS are read.
    """
    found: list[FoundEvidence] = []
    skipped: list[str] = []
    for d in refs.referrers(registry, repository, subject)[:MAX_REFERRERS]:
        kind = _KINDS.get(str(d.get("artifactType")))
        where = f"referrer {d.get('digest')}"
        if kind is None:
            skipped.append(f"{where}: artifact type {d.get('artifactType')!r} is not evidence")
            continue
        try:
            doc, data = refs.fetch(registry, repository, d, subject)
            ann = _annotations(doc)
            if kind == "signature":
                body: dict[str, object] = {
                    "payload": base64.b64encode(data).decode(),
                    "signature": ann.get(SIGNATURE_ANNOTATION, ""),
                }
            else:
                parsed = json.loads(data)
                if not isinstance(parsed, dict):
                    raise DataError("the document is not a JSON object")
                body = {"document" if kind == "sbom" else "envelope": parsed}
            for key, name in (
                ("certificate", CERT_ANNOTATION),
                ("chain", CHAIN_ANNOTATION),
                ("bundle", BUNDLE_ANNOTATION),
            ):
                if ann.get(name):
                    body[key] = ann[name]
        except (DataError, UnicodeDecodeError, json.JSONDecodeError) as e:
            skipped.append(f"{where}: {e}")
            continue
        found.append(FoundEvidence(kind, body, where))
    return found, skipped
