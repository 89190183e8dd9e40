"""Who may call the node API: only a current, unrevoked certificate of this CA, for itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.platform.nodeapi.conftest import NodePlatform

BEAT = {"boot_id": "b1", "agent_version": "1.0"}


def _foreign_cert(instance_id: str, now: object) -> bytes:
    """A certificate shaped like ours, for the same instance, signed by another CA."""
    ca_key = Ed25519PrivateKey.generate()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "powernode node CA")])
    key = Ed25519PrivateKey.generate()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, instance_id)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))  # type: ignore[operator]
        .not_valid_after(now + timedelta(days=1))  # type: ignore[operator]
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:powernode:instance:{instance_id}")]
            ),
            critical=False,
        )
        .sign(ca_key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _refused(r: object, *words: str) -> None:
    assert r.status_code == 401, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    detail = r.json()["detail"]  # type: ignore[attr-defined]
    for w in words:
        assert w in detail, detail


CALLS = [
    ("POST", "/status/heartbeat", BEAT),
    ("POST", "/tasks/lease", {"max": 5}),
    ("POST", "/events", {"events": []}),
    ("GET", "/modules", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CALLS, ids=[c[1] for c in CALLS])
def test_no_client_certificate_is_refused(
    node_platform: NodePlatform, method: str, path: str, body: object
) -> None:
    p = node_platform
    p.enroll()
    before = p.snapshot()
    _refused(p.node(None, method, path, json=body), "no client certificate")
    p.state.heartbeats.flush()
    assert p.snapshot() == before


def test_certificate_from_another_ca_is_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    p.call("POST", f"/node_instances/{creds.instance_id}/tasks", json={"kind": "x.y"})
    before = p.snapshot()
    der = _foreign_cert(creds.instance_id, p.clock())
    _refused(p.node(der, "POST", "/tasks/lease", json={"max": 5}), "not by this platform")
    _refused(p.node(der, "POST", "/status/heartbeat", json=BEAT))
    p.state.heartbeats.flush()
    assert p.snapshot() == before


def test_expired_certificate_is_refused(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    p.clock.advance(timedelta(days=31).total_seconds())  # default lifetime: 30 days
    before = p.snapshot()
    _refused(p.node(creds, "POST", "/status/heartbeat", json=BEAT), "expired")
    p.state.heartbeats.flush()
    assert p.snapshot() == before


def test_revoked_certificate_is_refused_at_once(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    assert p.node(creds, "POST", "/status/heartbeat", json=BEAT).status_code == 200
    r = p.call("POST", f"/node_instances/{creds.instance_id}/certificates/revoke")
    assert r.json() == {"revoked": [creds.serial]}
    p.state.heartbeats.flush()
    before = p.snapshot()
    _refused(p.node(creds, "POST", "/status/heartbeat", json=BEAT), "revoked", creds.serial)
    _refused(p.node(creds, "POST", "/tasks/lease", json={"max": 1}), "revoked")
    p.state.heartbeats.flush()
    assert p.snapshot() == before
    # A new bootstrap token enrolls it again with a new certificate.
    again = p.enroll(creds.instance_id)
    assert p.node(again, "POST", "/status/heartbeat", json=BEAT).status_code == 200


def test_revocation_made_elsewhere_is_seen_at_once(node_platform: NodePlatform) -> None:
    # Another API process revoked (here: SQL behind this process's back). The
    # live identity is read from the instance row on every request: no refresh.
    from sqlalchemy import text

    p = node_platform
    creds = p.enroll()
    assert p.node(creds, "POST", "/tasks/lease", json={"max": 1}).status_code == 200
    with p.engine.begin() as c:
        c.execute(text("UPDATE node_instances SET cert_serial = NULL, new_cert_serial = NULL"))
    _refused(p.node(creds, "POST", "/tasks/lease", json={"max": 1}), "revoked")
    _refused(p.node(creds, "POST", "/status/heartbeat", json=BEAT), "revoked")


def test_node_cannot_touch_another_nodes_tasks(node_platform: NodePlatform) -> None:
    p = node_platform
    a, b = p.enroll(), p.enroll()
    r = p.call("POST", f"/node_instances/{b.instance_id}/tasks", json={"kind": "x.y"})
    task_b = r.json()["task"]["id"]
    # A never sees B's task in a lease.
    assert p.node(a, "POST", "/tasks/lease", json={"max": 100}).json() == {"tasks": []}
    leased = p.node(b, "POST", "/tasks/lease", json={"max": 100}).json()["tasks"]
    assert [t["id"] for t in leased] == [task_b]
    before = p.snapshot()
    for verb, body in (("ack", {"result": {}}), ("fail", {"error": "x", "retryable": False})):
        r = p.node(a, "POST", f"/tasks/{task_b}/{verb}", json=body)
        assert r.status_code == 409, r.text
        assert "not leased by this instance" in r.json()["detail"]
    assert p.snapshot() == before


def test_identity_in_the_body_is_never_used(node_platform: NodePlatform) -> None:
    p = node_platform
    a, b = p.enroll(), p.enroll()
    p.state.heartbeats.flush()
    r = p.node(a, "POST", "/status/heartbeat", json={**BEAT, "instance_id": b.instance_id})
    assert r.status_code == 200
    p.state.heartbeats.flush()
    inst_a = p.call("GET", f"/node_instances/{a.instance_id}").json()["instance"]
    inst_b = p.call("GET", f"/node_instances/{b.instance_id}").json()["instance"]
    assert inst_a["last_heartbeat_at"] is not None
    assert inst_b["last_heartbeat_at"] is None
    before = p.snapshot()
    event = {
        "id": "0b3f6a0e-1111-4222-8333-444455556666",
        "kind": "x.y",
        "severity": "info",
        "occurred_at": p.clock().isoformat(),
        "payload": {},
        "instance_id": b.instance_id,
    }
    r = p.node(a, "POST", "/events", json={"events": [event]})
    assert r.status_code == 422
    assert p.snapshot() == before


def test_terminated_instance_is_refused_at_once(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    assert p.call("POST", f"/node_instances/{creds.instance_id}/terminate").status_code == 200
    before = p.snapshot()
    _refused(p.node(creds, "POST", "/tasks/lease", json={"max": 1}), "terminated")
    _refused(p.node(creds, "POST", "/status/heartbeat", json=BEAT), "terminated")
    p.state.heartbeats.flush()
    assert p.snapshot() == before
