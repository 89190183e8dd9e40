"""DSSE envelopes, SLSA provenance parsing, OpenVEX rules, policy loading (unit layer)."""

from __future__ import annotations

import base64
import json

import pytest

from powernode.signing.errors import SignatureInvalidError
from powernode.signing.keys import generate_private_key, public_key_pem
from powernode.signing.policy import PublicKeyPolicy
from powernode.supply import dsse, policy, provenance, vex
from tests.supply import fixtures as fx


def test_pae_matches_the_spec_example() -> None:
    # The DSSE protocol document's example.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_sign_verify_and_tamper(kind: str) -> None:
    key = generate_private_key(kind)  # type: ignore[arg-type]
    trust = PublicKeyPolicy(public_key_pem(key))
    env = dsse.parse(fx.provenance_envelope(key))
    signer = dsse.verify(env, trust)
    assert signer.key_fingerprint.startswith("SHA256:")
    prov = provenance.parse(env)
    assert (prov.builder_id, prov.subject_digest) == (fx.BUILDER, fx.DIGEST)
    assert [d.name for d in prov.dependencies] == ["lock", None, "source"]
    tampered = dsse.Envelope(env.payload_type, env.payload.replace(b"v1", b"v2"), env.signatures)
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        dsse.verify(tampered, trust)
    # The type is signed too: same payload under another type does not verify.
    retyped = dsse.Envelope("application/json", env.payload, env.signatures)
    with pytest.raises(SignatureInvalidError):
        dsse.verify(retyped, trust)
    with pytest.raises(SignatureInvalidError, match="not signed"):
        dsse.verify(dsse.Envelope(env.payload_type, env.payload, ()), trust)


def test_envelope_shape_errors() -> None:
    with pytest.raises(dsse.EnvelopeError, match="not JSON"):
        dsse.parse(b"{")
    with pytest.raises(dsse.EnvelopeError, match="payload is not base64"):
        dsse.parse({"payloadType": "t", "payload": "***"})
    with pytest.raises(dsse.EnvelopeError, match=r"signatures\[0\] has no sig"):
        dsse.parse({"payloadType": "t", "payload": "", "signatures": [{}]})


def test_provenance_errors() -> None:
    def env(doc: object) -> dsse.Envelope:
        return dsse.Envelope(dsse.INTOTO_PAYLOAD_TYPE, json.dumps(doc).encode(), ())

    good = fx.provenance_statement()
    with pytest.raises(provenance.ProvenanceError, match="predicateType"):
        provenance.parse(env({**good, "predicateType": "https://slsa.dev/provenance/v0.2"}))
    bad = json.loads(json.dumps(good))
    del bad["predicate"]["runDetails"]["builder"]
    with pytest.raises(provenance.ProvenanceError, match=r"builder\.id"):
        provenance.parse(env(bad))
    with pytest.raises(provenance.ProvenanceError, match="sha256:<64 hex>"):
        provenance.statement(
            subject_name="r", subject_digest="md5:00", builder_id="b", dependencies=[],
            parameters={},
        )  # fmt: skip


def test_vex_rules_and_latest_statement_wins() -> None:
    def doc(*statements: dict[str, object]) -> dict[str, object]:
        return vex.document(author="a", doc_id="d", timestamp="2026-01-01T00:00:00Z",
                            statements=list(statements))  # fmt: skip

    with pytest.raises(vex.VexError, match="needs a justification"):
        vex.parse(doc({"vulnerability": {"name": "CVE-1"}, "status": "not_affected"}))
    with pytest.raises(vex.VexError, match="needs an action_statement"):
        vex.parse(doc({"vulnerability": {"name": "CVE-1"}, "status": "affected"}))
    with pytest.raises(vex.VexError, match="status 'fine'"):
        vex.parse(doc({"vulnerability": "CVE-1", "status": "fine"}))
    sts = list(
        vex.parse(
            doc(
                {"vulnerability": {"name": "CVE-1"}, "status": "under_investigation",
                 "timestamp": "2026-01-01T00:00:00Z"},
                {"vulnerability": {"name": "CVE-1"}, "status": "fixed",
                 "products": [{"@id": "pkg:deb/debian/openssl@3.0.12-1"}],
                 "timestamp": "2026-02-01T00:00:00Z"},
            )
        )
    )  # fmt: skip
    got = vex.decide(sts, vuln_ids={"DEBIAN-CVE-1", "CVE-1"}, subject_ids=set(),
                     package_purl="pkg:deb/debian/openssl@3.0.12-1?arch=amd64")  # fmt: skip
    assert got is not None and got.status == "fixed"
    other = vex.decide(sts, vuln_ids={"CVE-1"}, subject_ids=set(),
                       package_purl="pkg:deb/debian/zlib1g@1?arch=amd64")  # fmt: skip
    assert other is not None and other.status == "under_investigation"


def test_policy_load_yaml_and_evaluate_without_rules() -> None:
    p = policy.load(
        "blessed:\n  sbom: {}\n  provenance:\n    builders: [https://b]\n"
        "live:\n  sbom: {min_components: 3}\n"
    )
    assert p.blessed is not None and p.blessed.provenance is not None
    ev = policy.Evidence("sha256:" + "00" * 32, sboms=(policy.SbomSeen("e1", "d", 2),))
    assert policy.evaluate(p, "module m", "staging", ev).rules == ()
    live = policy.evaluate(p, "module m", "live", ev)
    assert not live.allowed and "at least 3" in live.rules[0].reason
    with pytest.raises(policy.PolicyError, match="not YAML"):
        policy.load("blessed: [")
    with pytest.raises(policy.PolicyError, match="mapping"):
        policy.load("- 1")


def test_signature_rule_identity_and_key() -> None:
    rule = policy.load(
        {"blessed": {"signature": {"identity": "^ci@acme$", "issuer": "^https://i$"}}}
    )
    seen = policy.SignatureSeen("e1", True, "sha256:k", "ci@acme", "https://i")
    ok = policy.evaluate(rule, "m", "blessed", policy.Evidence(None, signatures=(seen,)))
    assert ok.allowed and "ci@acme" in ok.rules[0].reason
    wrong = policy.SignatureSeen("e2", True, "sha256:k", "dev@acme", "https://i")
    bad = policy.evaluate(rule, "m", "blessed", policy.Evidence(None, signatures=(wrong,)))
    assert not bad.allowed and "does not match" in bad.rules[0].reason
    none = policy.evaluate(rule, "m", "blessed", policy.Evidence(None))
    assert none.rules[0].reason == "the version has no signature"


def test_envelope_json_round_trip() -> None:
    key = generate_private_key()
    env = dsse.sign("t", b"{}", key, keyid="k1")
    again = dsse.parse(env.to_bytes())
    assert again == env
    assert json.loads(env.to_bytes())["signatures"][0]["keyid"] == "k1"
    assert base64.b64decode(env.to_json()["payload"]) == b"{}"
