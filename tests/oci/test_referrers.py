"""Issue 18: provenance, SBOM, VEX and signatures as OCI 1.1 referrers.

On the Debian docker-registry (distribution 2.8: no referrers API) they are
found through the referrers tag schema (``sha256-<hex>`` holding an image
index), and in an OCI layout through the same tag in index.json; one lookup
lists all four kinds. A tampered attestation is refused. cosign's ``.att``
attestation form is read from a vector built by hand from cosign's format
(cosign itself does not run on this host: see tests/supply/test_cosign_vectors).
"""

from __future__ import annotations

import base64
import datetime
import io
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.errors import DataError
from powernode.oci import referrers as refs
from powernode.oci.digest import Digest
from powernode.oci.layout import LayoutRegistry
from powernode.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from powernode.oci.refs import Reference
from powernode.oci.registry import Registry, open_registry
from powernode.signing.errors import SignatureInvalidError
from powernode.signing.keys import generate_private_key, public_key_pem
from powernode.signing.policy import KeylessPolicy, PublicKeyPolicy, UnsafeValidityAtNow
from powernode.signing.sign import sign_manifest_digest
from powernode.supply import attest, dsse
from tests.oci.registry_fixture import RunningRegistry
from tests.signing.testca import WORKFLOW, FakeCA, pem
from tests.supply import fixtures as fx

KEY = generate_private_key()
TRUST = PublicKeyPolicy(public_key_pem(KEY))


def push_subject(reg: Registry, repo: str, layer: bytes = b"composefs image bytes") -> Digest:
    """A small module-like artifact: empty config, one layer."""
    for blob in (b"{}", layer):
        reg.push_blob(repo, io.BytesIO(blob), Digest.of_bytes(blob), len(blob))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.powernode.module.v1",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": str(Digest.of_bytes(b"{}")),
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.powernode.composefs.v1",
                "digest": str(Digest.of_bytes(layer)),
                "size": len(layer),
            }
        ],
    }
    return reg.push_manifest(
        Reference(None, repo, "0.1.0"), json.dumps(manifest).encode(), OCI_MANIFEST
    )


def envelope(subject: Digest, builder: str = fx.BUILDER) -> dsse.Envelope:
    return dsse.parse(fx.provenance_envelope(KEY, builder, str(subject)))


def attach_all(reg: Registry, repo: str, subject: Digest, prov: dsse.Envelope) -> dict[str, Digest]:
    sig = sign_manifest_digest(repo, str(subject), KEY)
    return {
        refs.PROVENANCE_TYPE: attest.attach_provenance(reg, repo, subject, prov),
        refs.SBOM_TYPE: attest.attach_sbom(reg, repo, subject, json.dumps(fx.sbom()).encode()),
        refs.VEX_TYPE: attest.attach_vex(
            reg, repo, subject, dsse.parse(fx.vex_envelope(KEY, "CVE-2026-1"))
        ),
        refs.SIGNATURE_TYPE: attest.attach_signature(reg, repo, subject, sig),
    }


def check_discovery(reg: Registry, repo: str) -> None:
    subject = push_subject(reg, repo)
    prov_env = envelope(subject)  # ECDSA signs differently each time: keep this one
    attached = attach_all(reg, repo, subject, prov_env)
    # One lookup finds all four kinds.
    found = refs.referrers(reg, repo, subject)
    assert {d["artifactType"]: Digest.parse(d["digest"]) for d in found} == attached
    # Through the tag schema: an image index under sha256-<hex>.
    index = reg.get_manifest(Reference(None, repo, refs.fallback_tag(subject)))
    assert json.loads(index.data)["mediaType"] == OCI_INDEX
    # Each referrer names the subject; provenance verifies, SBOM comes back whole.
    [prov] = attest.verify_provenance(reg, repo, subject, TRUST)
    assert prov.provenance.builder_id == fx.BUILDER and prov.source.startswith("referrer")
    assert json.loads(attest.find_sbom(reg, repo, subject)) == fx.sbom()
    only = refs.referrers(reg, repo, subject, refs.SBOM_TYPE)
    assert [d["digest"] for d in only] == [str(attached[refs.SBOM_TYPE])]
    # Attaching the same thing twice lists it once.
    attest.attach_provenance(reg, repo, subject, prov_env)
    assert len(refs.referrers(reg, repo, subject)) == 4


def check_tampered(reg: Registry, repo: str) -> None:
    subject = push_subject(reg, repo)
    good = envelope(subject)
    forged = dsse.Envelope(
        good.payload_type, envelope(subject, fx.OTHER_BUILDER).payload, good.signatures
    )
    attest.attach_provenance(reg, repo, subject, forged)
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        attest.verify_provenance(reg, repo, subject, TRUST)
    other_key = generate_private_key()
    attest.attach_provenance(
        reg, repo, subject, dsse.parse(fx.provenance_envelope(other_key, digest=str(subject)))
    )
    with pytest.raises(SignatureInvalidError, match="no provenance of"):
        attest.verify_provenance(reg, repo, subject, TRUST)
    # A genuine one beside them: only it is returned.
    attest.attach_provenance(reg, repo, subject, good)
    [ok] = attest.verify_provenance(reg, repo, subject, TRUST)
    assert ok.provenance.builder_id == fx.BUILDER
    # A statement about another artifact, correctly signed, is refused too.
    other = push_subject(reg, repo + "-other", b"another module")
    attest.attach_provenance(reg, repo + "-other", other, envelope(subject))
    with pytest.raises(SignatureInvalidError, match="the statement is about"):
        attest.verify_provenance(reg, repo + "-other", other, TRUST)


@pytest.mark.registry
def test_registry_without_referrers_api_uses_the_tag_schema(oci_registry: RunningRegistry) -> None:
    with open_registry(oci_registry.url) as reg:
        subject = push_subject(reg, "supply/probe")
        r = httpx.get(f"{oci_registry.url}/v2/supply/probe/referrers/{subject}")
        assert r.status_code == 404  # distribution 2.8: no API, hence the fallback
        check_discovery(reg, "supply/discovery")


@pytest.mark.registry
def test_registry_tampered_attestation_refused(oci_registry: RunningRegistry) -> None:
    with open_registry(oci_registry.url) as reg:
        check_tampered(reg, "supply/tampered")


def test_layout_discovery(tmp_path: Path) -> None:
    check_discovery(LayoutRegistry(tmp_path / "layout"), "supply/discovery")


def test_layout_tampered_attestation_refused(tmp_path: Path) -> None:
    check_tampered(LayoutRegistry(tmp_path / "layout"), "supply/tampered")


def test_tag_that_is_not_an_index_is_not_overwritten(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "layout")
    subject = push_subject(reg, "supply/clash")
    other = push_subject(reg, "supply/other")
    data = reg.get_manifest(Reference(None, "supply/other", None, other)).data
    reg.push_manifest(
        Reference(None, "supply/clash", refs.fallback_tag(subject)), data, OCI_MANIFEST
    )
    with pytest.raises(DataError, match="is not an image index"):
        attest.attach_sbom(reg, "supply/clash", subject, b"{}")


def cosign_att_vector(reg: Registry, repo: str, subject: Digest, env: bytes) -> None:
    """cosign's ``.att``, written by hand from its format (not by attest.py)."""
    zero = "0001-01-01T00:00:00Z"
    diff = "sha256:" + Digest.of_bytes(env).hex
    config = json.dumps(
        {"architecture": "", "created": zero, "history": [{"created": zero}], "os": "",
         "rootfs": {"type": "layers", "diff_ids": [diff]}, "config": {}},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    for blob in (config, env):
        reg.push_blob(repo, io.BytesIO(blob), Digest.of_bytes(blob), len(blob))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": str(Digest.of_bytes(config)),
        },
        "layers": [
            {
                "mediaType": "application/vnd.dsse.envelope.v1+json",
                "size": len(env),
                "digest": diff,
                "annotations": {
                    "dev.cosignproject.cosign/signature": "",
                    "predicateType": "https://slsa.dev/provenance/v1",
                },
            }
        ],
    }
    tag = f"sha256-{subject.hex}.att"
    reg.push_manifest(Reference(None, repo, tag), json.dumps(manifest).encode(), OCI_MANIFEST)


def test_we_accept_cosigns_att_form_and_write_it(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "layout")
    subject = push_subject(reg, "supply/cosign")
    # cosign writes the envelope with keyid "" and standard base64.
    payload = envelope(subject).payload
    sig = dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, payload, KEY).signatures[0][1]
    env = json.dumps(
        {"payloadType": "application/vnd.in-toto+json",
         "payload": base64.b64encode(payload).decode(),
         "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}]}
    ).encode()  # fmt: skip
    cosign_att_vector(reg, "supply/cosign", subject, env)
    [got] = attest.verify_provenance(reg, "supply/cosign", subject, TRUST)
    assert got.source == "cosign .att layer 1"
    # Ours in the same form: the manifest cosign verify-attestation reads.
    subject2 = push_subject(reg, "supply/ours")
    attest.attach_cosign_attestation(reg, "supply/ours", subject2, envelope(subject2))
    att = json.loads(
        reg.get_manifest(Reference(None, "supply/ours", f"sha256-{subject2.hex}.att")).data
    )
    [layer] = att["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {
        "dev.cosignproject.cosign/signature": "",
        "predicateType": "https://slsa.dev/provenance/v1",
    }
    assert att["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    [again] = attest.verify_provenance(reg, "supply/ours", subject2, TRUST)
    assert again.source == "cosign .att layer 1"


def test_keyless_attestation_verifies_by_identity(tmp_path: Path) -> None:
    ca = FakeCA()
    now = datetime.datetime.now(datetime.UTC)
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    hour = datetime.timedelta(hours=1)
    cert = pem(ca.leaf(key, not_before=now - hour, not_after=now + hour))
    reg = LayoutRegistry(tmp_path / "layout")
    subject = push_subject(reg, "supply/keyless")
    env = dsse.parse(fx.provenance_envelope(key, digest=str(subject)))
    attest.attach_cosign_attestation(
        reg, "supply/keyless", subject, env, certificate_pem=cert, chain_pem=ca.chain_pem
    )

    def policy(identity: str) -> KeylessPolicy:
        return KeylessPolicy(
            ca.root_pem, identity, r"https://token\.actions\.githubusercontent\.com", now,
            UnsafeValidityAtNow(),
        )  # fmt: skip

    [got] = attest.verify_provenance(reg, "supply/keyless", subject, policy(".*"))
    assert got.signer.identity == WORKFLOW
    with pytest.raises(SignatureInvalidError, match="no provenance of"):
        attest.verify_provenance(reg, "supply/keyless", subject, policy("https://other/.*"))
