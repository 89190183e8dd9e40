"""Enrollment and rotation: the happy path and every refusal, each changing nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from tests.platform.nodeapi.conftest import NodePlatform, csr_pem


def _problem(r: object, status: int, *words: str) -> None:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    detail = r.json()["detail"]  # type: ignore[attr-defined]
    for w in words:
        assert w in detail, detail


def _only_a_refusal_event(p: NodePlatform, before: dict[str, Any], iid: str, word: str) -> None:
    """Nothing changed but one ``instance.enroll_refused`` event on ``iid``, saying why."""
    after = p.snapshot()
    new = [e for e in after.pop("fleet_events") if e not in before["fleet_events"]]
    assert after == {k: v for k, v in before.items() if k != "fleet_events"}
    assert [(e[1], iid in e) for e in new] == [("instance.enroll_refused", True)], new
    events = p.call("GET", f"/node_instances/{iid}/events").json()["events"]
    refused = [e for e in events if e["kind"] == "instance.enroll_refused"]
    assert len(refused) == 1 and word in refused[0]["payload"]["reason"], refused


def test_enroll_issues_a_certificate_naming_the_instance(node_platform: NodePlatform) -> None:
    p = node_platform
    iid = p.instance()
    r = p.enroll_raw(p.token(iid), csr_pem())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["instance_id"] == iid
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:powernode:instance:{iid}"
    ]
    assert body["ca_pem"] == p.state.node_ca.ca_pem
    snap = p.snapshot()
    assert [r[0] for r in snap["bootstrap_tokens"] if r[-1] != "None"]  # used_at set
    certs = snap["node_certificates"]
    assert len(certs) == 1 and iid in certs[0]
    events = p.call("GET", f"/node_instances/{iid}/events").json()["events"]
    assert "instance.enrolled" in [e["kind"] for e in events]
    inst = p.call("GET", f"/node_instances/{iid}").json()["instance"]
    assert inst["status"] == "running"


def test_reused_token_is_refused_and_changes_nothing(node_platform: NodePlatform) -> None:
    p = node_platform
    iid = p.instance()
    token = p.token(iid)
    assert p.enroll_raw(token, csr_pem()).status_code == 201
    before = p.snapshot()
    _problem(p.enroll_raw(token, csr_pem()), 401, "already used", "create-bootstrap-token")
    _only_a_refusal_event(p, before, iid, "already used")


def test_expired_token_is_refused_and_changes_nothing(node_platform: NodePlatform) -> None:
    p = node_platform
    iid = p.instance()
    token = p.token(iid, ttl_seconds=60)
    p.clock.advance(61)
    before = p.snapshot()
    _problem(p.enroll_raw(token, csr_pem()), 401, "expired at", iid)
    _only_a_refusal_event(p, before, iid, "expired at")


def test_unknown_token_is_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    before = p.snapshot()
    _problem(p.enroll_raw("pnb_nope", csr_pem()), 401, "unknown")
    assert p.snapshot() == before  # no instance to record it on


def test_a_foreign_token_is_recorded_on_the_instance_the_node_claims(
    node_platform: NodePlatform,
) -> None:
    """A seed bundle from another platform: its token is unknown here; the node names itself."""
    p = node_platform
    iid = p.instance()
    before = p.snapshot()
    _problem(p.enroll_raw("pnb_foreign", csr_pem(), instance_id=iid), 401, "unknown")
    _only_a_refusal_event(p, before, iid, "bootstrap token unknown")
    # the agent names itself in the CSR's CN (its claimed identity)
    before = p.snapshot()
    _problem(p.enroll_raw("pnb_foreign", csr_pem(cn=iid)), 401, "unknown")
    after = p.snapshot()
    assert len(after["fleet_events"]) == len(before["fleet_events"]) + 1


@pytest.mark.parametrize("where", ["body", "csr"])
def test_token_for_another_instance_is_refused(node_platform: NodePlatform, where: str) -> None:
    p = node_platform
    a, b = p.instance(), p.instance()
    token_b = p.token(b)
    before = p.snapshot()
    if where == "body":
        r = p.enroll_raw(token_b, csr_pem(), instance_id=a)
    else:
        r = p.enroll_raw(token_b, csr_pem(cn=a))
    _problem(r, 403, a, b)
    _only_a_refusal_event(p, before, b, f"names instance {a}")


def test_foreign_key_type_csr_is_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    iid = p.instance()
    token = p.token(iid)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, iid)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    before = p.snapshot()
    r = p.enroll_raw(token, csr.public_bytes(serialization.Encoding.PEM).decode())
    assert r.status_code == 422, r.text
    assert "Ed25519" in r.json()["detail"]
    assert p.snapshot() == before  # the token is still unused: it can be used with a good CSR
    assert p.enroll_raw(token, csr_pem()).status_code == 201


def test_terminated_instance_cannot_enroll(node_platform: NodePlatform) -> None:
    p = node_platform
    iid = p.instance()
    token = p.token(iid)
    assert p.call("POST", f"/node_instances/{iid}/terminate").status_code == 200
    before = p.snapshot()
    _problem(p.enroll_raw(token, csr_pem()), 409, "terminated")
    _only_a_refusal_event(p, before, iid, "terminated")


def test_rotate_issues_a_new_certificate_for_the_caller(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    p.clock.advance(3600)
    key = Ed25519PrivateKey.generate()
    r = p.node(creds, "POST", "/certificates/rotate", json={"csr_pem": csr_pem(key)})
    assert r.status_code == 200, r.text
    new = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    assert new.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == creds.instance_id
    certs = p.call("GET", f"/node_instances/{creds.instance_id}/certificates").json()
    assert [c["reason"] for c in certs["certificates"]] == ["enroll", "rotate"]


def test_rotate_with_a_csr_naming_another_instance_is_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    a = p.enroll()
    b = p.instance()
    before = p.snapshot()
    r = p.node(a, "POST", "/certificates/rotate", json={"csr_pem": csr_pem(cn=b)})
    _problem(r, 403, b, a.instance_id)
    assert p.snapshot() == before


def test_token_ttl_is_bounded(node_platform: NodePlatform) -> None:
    p = node_platform
    iid = p.instance()
    r = p.call(
        "POST",
        f"/node_instances/{iid}/bootstrap_tokens",
        json={"ttl_seconds": int(timedelta(days=31).total_seconds())},
    )
    assert r.status_code == 422
    assert p.count("bootstrap_tokens") == 0
