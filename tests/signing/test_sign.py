"""Signing and the signature manifest cosign stores under sha256-<hex>.sig."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.signing import (
    MEDIA_TYPE,
    SigningSetupError,
    generate_private_key,
    parse_payload,
    sign_manifest_digest,
    signature_from_layer,
    signature_manifest,
    signature_tag,
)
from tests.signing.testca import FakeCA, pem

REPO = "registry.example.com/acme/modules/nginx"
DIGEST = "sha256:" + "0f" * 32


def test_signature_tag() -> None:
    assert signature_tag(DIGEST) == "sha256-" + "0f" * 32 + ".sig"
    with pytest.raises(SigningSetupError, match="is not a manifest digest"):
        signature_tag("sha256-abc")


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_sign_produces_cosign_payload(kind: str) -> None:
    key = generate_private_key(kind)  # type: ignore[arg-type]
    sig = sign_manifest_digest(REPO, DIGEST, key, annotations={"git": "abc"})
    payload = parse_payload(sig.payload)
    assert (payload.docker_reference, payload.manifest_digest) == (REPO, DIGEST)
    assert payload.optional == {"git": "abc"}
    raw = base64.b64decode(sig.signature_b64)
    if kind == "ed25519":
        assert len(raw) == 64
    else:
        assert raw[0] == 0x30  # DER SEQUENCE: cosign's ASN.1 ECDSA signature
    assert sig.certificate_pem is None
    assert sig.chain_pem is None


def test_signature_manifest_layout() -> None:
    key = generate_private_key()
    one = sign_manifest_digest(REPO, DIGEST, key)
    two = sign_manifest_digest(REPO, DIGEST, generate_private_key("ed25519"))
    manifest, config, layers = signature_manifest([one, two, one])
    assert len(layers) == 2  # the duplicate is dropped
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "size": len(config),
        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
    }
    for entry, layer, sig in zip(manifest["layers"], layers, [one, two], strict=True):
        assert entry["mediaType"] == MEDIA_TYPE == layer.media_type
        assert entry["digest"] == "sha256:" + hashlib.sha256(sig.payload).hexdigest()
        assert entry["size"] == len(sig.payload)
        assert entry["annotations"] == {"dev.cosignproject.cosign/signature": sig.signature_b64}
        assert layer.data == sig.payload
        assert signature_from_layer(layer) == sig
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    assert diff_ids == [e["digest"] for e in manifest["layers"]]
    json.dumps(manifest)  # serialisable as is


def test_signature_manifest_needs_signatures() -> None:
    with pytest.raises(SigningSetupError, match="at least one signature"):
        signature_manifest([])


def test_certificate_annotations() -> None:
    ca = FakeCA()
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = pem(ca.leaf(key))
    sig = sign_manifest_digest(REPO, DIGEST, key, certificate_pem=cert, chain_pem=ca.chain_pem)
    manifest, _, layers = signature_manifest([sig])
    notes = manifest["layers"][0]["annotations"]
    assert notes["dev.sigstore.cosign/certificate"] == cert.decode()
    assert notes["dev.sigstore.cosign/chain"] == ca.chain_pem.decode()
    assert signature_from_layer(layers[0]) == sig


def test_certificate_for_another_key_is_refused() -> None:
    ca = FakeCA()
    other = generate_private_key()
    assert isinstance(other, ec.EllipticCurvePrivateKey)
    with pytest.raises(SigningSetupError, match="certifies another key than SHA256:"):
        sign_manifest_digest(
            REPO, DIGEST, generate_private_key(), certificate_pem=pem(ca.leaf(other))
        )


def test_chain_without_certificate_is_refused() -> None:
    with pytest.raises(SigningSetupError, match="chain was given without a certificate"):
        sign_manifest_digest(REPO, DIGEST, generate_private_key(), chain_pem=FakeCA().chain_pem)
