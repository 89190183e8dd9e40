"""``attest.collect_evidence``: what ingest reads among a manifest's referrers (OCI layout).

One lookup finds provenance, SBOM, VEX and signature referrers and turns each
into the body the evidence API takes; a keyless attestation's certificate and
chain travel from the layer's cosign annotations; a referrer of another
artifact type, or one that is not JSON, is skipped with its reason. Nothing is
trusted here: verification is the platform's (tests/platform/test_supply_ingest.py).
"""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from powernode.oci import referrers as refs
from powernode.oci.layout import LayoutRegistry
from powernode.signing.keys import generate_private_key
from powernode.signing.policy import KeylessPolicy, UnsafeValidityAtNow
from powernode.signing.sign import sign_manifest_digest
from powernode.supply import attest, dsse
from tests.oci.test_referrers import push_subject
from tests.signing.testca import WORKFLOW, FakeCA, pem
from tests.supply import fixtures as fx

KEY = generate_private_key()


def test_collect_evidence_from_a_layout(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "layout")
    repo = "supply/collect"
    subject = push_subject(reg, repo)
    env = dsse.parse(json.dumps(fx.provenance_envelope(KEY, digest=str(subject))))
    refs.attach(
        reg,
        repo,
        subject,
        artifact_type=refs.PROVENANCE_TYPE,
        layer_media_type=refs.DSSE_LAYER,
        layer=env.to_bytes(),
        annotations={attest.CERT_ANNOTATION: "CERT PEM", attest.CHAIN_ANNOTATION: "CHAIN PEM"},
    )
    attest.attach_sbom(reg, repo, subject, json.dumps(fx.sbom()).encode())
    attest.attach_vex(reg, repo, subject, dsse.parse(json.dumps(fx.vex_envelope(KEY, "CVE-1"))))
    sig = sign_manifest_digest(repo, str(subject), KEY)
    attest.attach_signature(reg, repo, subject, sig)
    refs.attach(
        reg, repo, subject, artifact_type="application/x-other", layer_media_type="x", layer=b"1"
    )
    refs.attach(reg, repo, subject, artifact_type=refs.SBOM_TYPE, layer_media_type="x", layer=b"{")

    found, skipped = attest.collect_evidence(reg, repo, subject)
    kinds = [f.kind for f in found]
    assert kinds == ["provenance", "sbom", "vex", "signature"]
    prov, sbom, vex, signature = found
    assert prov.body["envelope"] == json.loads(env.to_bytes())
    assert (prov.body["certificate"], prov.body["chain"]) == ("CERT PEM", "CHAIN PEM")
    assert sbom.body == {"document": fx.sbom()}
    assert "certificate" not in vex.body and set(vex.body) == {"envelope"}
    assert base64.b64decode(str(signature.body["payload"])) == sig.payload
    assert signature.body["signature"] == sig.signature_b64
    assert len(skipped) == 2
    assert "'application/x-other' is not evidence" in skipped[0]
    assert skipped[1].startswith("referrer sha256:")


def test_no_referrers_is_no_evidence(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "layout")
    subject = push_subject(reg, "supply/none")
    assert attest.collect_evidence(reg, "supply/none", subject) == ([], [])


def test_keyless_provenance_referrer_verifies_by_its_manifest_annotations(tmp_path: Path) -> None:
    """refs.attach puts the certificate on the manifest; verify_provenance reads it there."""
    ca = FakeCA()
    now = datetime.datetime.now(datetime.UTC)
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    hour = datetime.timedelta(hours=1)
    cert = pem(ca.leaf(key, not_before=now - hour, not_after=now + hour))
    reg = LayoutRegistry(tmp_path / "layout")
    subject = push_subject(reg, "supply/kl")
    env = dsse.parse(json.dumps(fx.provenance_envelope(key, digest=str(subject))))
    refs.attach(
        reg,
        "supply/kl",
        subject,
        artifact_type=refs.PROVENANCE_TYPE,
        layer_media_type=refs.DSSE_LAYER,
        layer=env.to_bytes(),
        annotations={
            attest.CERT_ANNOTATION: cert.decode(),
            attest.CHAIN_ANNOTATION: ca.chain_pem.decode(),
        },
    )
    issuer = r"https://token\.actions\.githubusercontent\.com"
    policy = KeylessPolicy(ca.root_pem, ".*", issuer, now, UnsafeValidityAtNow())
    [got] = attest.verify_provenance(reg, "supply/kl", subject, policy)
    assert got.signer.identity == WORKFLOW and got.source.startswith("referrer ")
