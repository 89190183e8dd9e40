"""The node CA: files, issuing from CSRs and verifying peers, with every refusal."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powernode.agent.certstore import build_csr, instance_id_of
from powernode.errors import ConfigError
from powernode.platform import pki
from powernode.platform.pki import INSTANCE_URI_PREFIX, NodeCA
from powernode.platform.problems import AuthenticationError, InvalidInputError
from tests.platform.nodeapi_tls import forge
from tests.platform.nodeapi_tls.forge import INSTANCE, OTHER

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "pki"


@pytest.fixture
def ca(ca_dir: Path) -> NodeCA:
    return NodeCA.load_or_create(ca_dir, now=NOW)


def _issue(
    ca: NodeCA, instance: str = INSTANCE, lifetime: timedelta = 30 * DAY
) -> x509.Certificate:
    issued = ca.issue(
        build_csr(Ed25519PrivateKey.generate(), "hint").decode(),
        instance,
        now=NOW,
        lifetime=lifetime,
    )
    return x509.load_pem_x509_certificate(issued.certificate_pem.encode())


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# -- files ---------------------------------------------------------------------------------


def test_load_or_create_writes_a_private_key_and_reloads_the_same_ca(ca_dir: Path) -> None:
    first = NodeCA.load_or_create(ca_dir, now=NOW)
    assert stat.S_IMODE((ca_dir / "node-ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert not [p for p in ca_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    again = NodeCA.load_or_create(ca_dir, now=NOW + DAY)
    assert again.ca_pem == first.ca_pem
    cert = x509.load_pem_x509_certificate(first.ca_pem.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # A certificate from the first load verifies with the second (same key).
    peer = again.verify_peer(forge.der(_issue(first)), now=NOW)
    assert peer.instance_id == INSTANCE


def test_a_key_that_does_not_match_the_certificate_is_refused_naming_the_key(
    ca_dir: Path,
) -> None:
    NodeCA.load_or_create(ca_dir, now=NOW)
    (ca_dir / "node-ca.key").write_bytes(forge.key_pem(Ed25519PrivateKey.generate()))
    before = _snapshot(ca_dir)
    with pytest.raises(ConfigError, match=r"node-ca\.key: this key does not match .*node-ca\.pem"):
        NodeCA.load_or_create(ca_dir, now=NOW)
    assert _snapshot(ca_dir) == before


def test_a_certificate_without_its_key_is_refused_and_not_replaced(ca_dir: Path) -> None:
    NodeCA.load_or_create(ca_dir, now=NOW)
    (ca_dir / "node-ca.key").unlink()
    before = _snapshot(ca_dir)
    with pytest.raises(ConfigError, match=r"node-ca\.key: missing.*restore the CA key"):
        NodeCA.load_or_create(ca_dir, now=NOW)
    assert _snapshot(ca_dir) == before


def test_a_key_without_its_certificate_gets_one_for_that_key(ca_dir: Path) -> None:
    # The crash window between the two writes (the key is written first).
    first = NodeCA.load_or_create(ca_dir, now=NOW)
    key_before = (ca_dir / "node-ca.key").read_bytes()
    (ca_dir / "node-ca.pem").unlink()
    again = NodeCA.load_or_create(ca_dir, now=NOW)
    assert (ca_dir / "node-ca.key").read_bytes() == key_before
    assert again.verify_peer(forge.der(_issue(first)), now=NOW).instance_id == INSTANCE


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage", r"node-ca\.key: not an unencrypted PEM private key"),
        (None, r"node-ca\.key: the CA key is a _?RSAPrivateKey, not Ed25519"),
    ],
    ids=["not-pem", "rsa"],
)
def test_an_unusable_key_file_is_refused(ca_dir: Path, content: bytes | None, message: str) -> None:
    NodeCA.load_or_create(ca_dir, now=NOW)
    (ca_dir / "node-ca.key").write_bytes(content or forge.key_pem(forge.rsa_key()))
    with pytest.raises(ConfigError, match=message):
        NodeCA.load_or_create(ca_dir, now=NOW)


def test_an_expired_ca_is_refused(ca_dir: Path) -> None:
    NodeCA.load_or_create(ca_dir, now=NOW)
    with pytest.raises(ConfigError, match=r"node-ca\.pem: the CA certificate expired at"):
        NodeCA.load_or_create(ca_dir, now=NOW + timedelta(days=3651))


# -- issuing -------------------------------------------------------------------------------


def test_issue_round_trip(ca: NodeCA) -> None:
    key = Ed25519PrivateKey.generate()
    issued = ca.issue(
        build_csr(key, "whatever the node thinks").decode(), INSTANCE, now=NOW, lifetime=30 * DAY
    )
    cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    der = forge.der(cert)
    assert issued.serial == format(cert.serial_number, "x")
    assert issued.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert issued.not_before == NOW - timedelta(minutes=5)  # backdated for clock skew
    assert issued.not_after == NOW + 30 * DAY
    # The platform names the certificate, not the CSR.
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == INSTANCE
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        INSTANCE_URI_PREFIX + INSTANCE
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.public_key() == key.public_key()
    assert instance_id_of(cert) == INSTANCE  # the agent reads the same identity
    peer = ca.verify_peer(der, now=NOW)
    assert peer == pki.NodePeer(
        INSTANCE, issued.serial, issued.fingerprint_sha256, issued.not_after
    )


def _tampered_csr() -> str:
    good = x509.load_pem_x509_csr(build_csr(Ed25519PrivateKey.generate(), "n"))
    raw = bytearray(good.public_bytes(serialization.Encoding.DER))
    raw[-1] ^= 0x01  # the last byte of the Ed25519 signature
    return x509.load_der_x509_csr(bytes(raw)).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("make_csr", "message"),
    [
        (lambda: "hello", r"csr_pem is not a PEM certificate signing request"),
        (
            lambda: forge.csr(forge.ecdsa_key()),
            r"foreign key type ECDSA secp256r1; the node API accepts Ed25519 CSRs only",
        ),
        (
            lambda: forge.csr(forge.rsa_key()),
            r"foreign key type RSA-2048; the node API accepts Ed25519 CSRs only",
        ),
        (_tampered_csr, r"self-signature does not verify"),
        (lambda: "A" * 20_000, r"over the 16384 limit"),
    ],
    ids=["not-pem", "ecdsa", "rsa", "bad-signature", "too-large"],
)
def test_issue_refuses_bad_csrs(ca: NodeCA, make_csr, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=message) as caught:
        ca.issue(make_csr(), INSTANCE, now=NOW, lifetime=30 * DAY)
    assert caught.value.status == 422
    assert caught.value.extra == {"field": "csr_pem"}


@pytest.mark.parametrize(
    "instance", ["node-1", INSTANCE.upper(), ""], ids=["name", "upper", "empty"]
)
def test_issue_refuses_an_instance_id_that_is_not_a_canonical_uuid(
    ca: NodeCA, instance: str
) -> None:
    with pytest.raises(InvalidInputError, match="not a lowercase canonical UUID"):
        _issue(ca, instance)


def test_issue_never_outlives_the_ca(ca: NodeCA) -> None:
    assert _issue(ca, lifetime=timedelta(days=800)).not_valid_after_utc == NOW + timedelta(days=800)
    late = NOW + timedelta(days=3640)
    issued = ca.issue(
        build_csr(Ed25519PrivateKey.generate(), "n").decode(),
        INSTANCE,
        now=late,
        lifetime=timedelta(days=800),
    )
    assert issued.not_after == ca.certificate.not_valid_after_utc


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_issue_any_text_is_a_certificate_or_an_invalid_input(ca: NodeCA, text: str) -> None:
    try:
        ca.issue("-----BEGIN CERTIFICATE REQUEST-----\n" + text, INSTANCE, now=NOW, lifetime=DAY)
    except InvalidInputError as e:
        assert "csr_pem" in e.detail


# -- verifying -----------------------------------------------------------------------------


def _refused(ca: NodeCA, der: bytes, message: str, now: datetime = NOW) -> AuthenticationError:
    with pytest.raises(AuthenticationError, match=message) as caught:
        ca.verify_peer(der, now=now)
    assert caught.value.status == 401
    return caught.value


def test_verify_refuses_a_certificate_from_another_ca(ca: NodeCA) -> None:
    cert, _ = forge.forge_cert(forge.other_ca(NOW), now=NOW)
    _refused(ca, forge.der(cert), r"issued by CN=someone else's CA, not by this platform's node CA")


def test_verify_refuses_a_certificate_naming_our_ca_but_signed_by_another_key(
    ca: NodeCA,
) -> None:
    impostor = forge.CA(Ed25519PrivateKey.generate(), ca.certificate)
    cert, _ = forge.forge_cert(impostor, now=NOW)
    _refused(ca, forge.der(cert), r"not by this platform's node CA \(or its signature is wrong\)")


@pytest.mark.parametrize(
    ("now", "message"),
    [
        (NOW + 31 * DAY, r"expired at 2026-07-01T12:00:00\+00:00; the agent rotates at 75 %"),
        (NOW - timedelta(minutes=6), r"not valid before 2026-06-01T11:55:00\+00:00.*NTP"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_verify_checks_the_window_even_when_cached(ca: NodeCA, now: datetime, message: str) -> None:
    der = forge.der(_issue(ca))
    assert ca.verify_peer(der, now=NOW).instance_id == INSTANCE  # now in the cache
    error = _refused(ca, der, message, now=now)
    assert error.extra["serial"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}, r"not for client authentication"),
        ({"eku": []}, r"not for client authentication"),
        ({"eku": [], "malformed_eku": True}, r"malformed extensions"),
        ({"uris": []}, r"names 0 instances"),
        ({"uris": ["urn:powernode:node:" + INSTANCE]}, r"names 0 instances"),
        (
            {"uris": [INSTANCE_URI_PREFIX + INSTANCE, INSTANCE_URI_PREFIX + OTHER]},
            r"names 2 instances",
        ),
        ({"cn": OTHER}, rf"subject CN {OTHER} does not agree with the URI SAN instance {INSTANCE}"),
        ({"instance": "not-a-uuid"}, r"'not-a-uuid' is not a canonical UUID"),
        ({"is_ca": True}, r"is a CA certificate"),
        ({"key": forge.ecdsa_key()}, r"foreign key type \(ECDSA secp256r1\)"),
    ],
    ids=[
        "server-eku",
        "no-eku",
        "malformed-eku",
        "no-san",
        "other-urn",
        "two-instances",
        "cn-mismatch",
        "not-uuid",
        "ca",
        "ecdsa-key",
    ],
)
def test_verify_refuses_certificates_of_the_wrong_shape(
    ca: NodeCA, ca_dir: Path, changes: dict[str, object], message: str
) -> None:
    cert, _ = forge.forge_cert(forge.load_ca(ca_dir), now=NOW, **changes)  # type: ignore[arg-type]
    _refused(ca, forge.der(cert), message)


@pytest.mark.parametrize(
    "der", [b"", b"\x30\x03abc", os.urandom(64)], ids=["empty", "short", "noise"]
)
def test_verify_refuses_bytes_that_are_not_a_certificate(ca: NodeCA, der: bytes) -> None:
    _refused(ca, der, "client certificate is not DER X.509")


def test_verify_refuses_oversized_input(ca: NodeCA) -> None:
    _refused(ca, b"0" * 20_000, "over the 16384-byte limit")


def test_verify_cache_is_bounded(ca_dir: Path) -> None:
    files = forge.load_ca(ca_dir) if (ca_dir / "node-ca.key").exists() else None
    assert files is None
    NodeCA.load_or_create(ca_dir, now=NOW)
    files = forge.load_ca(ca_dir)
    ca = NodeCA(files.key, files.cert, cache_size=3)
    ders = [forge.der(_issue(ca)) for _ in range(5)]
    for der in ders:
        ca.verify_peer(der, now=NOW)
    assert ca.cached_peers == 3
    # An evicted certificate is simply checked again.
    assert ca.verify_peer(ders[0], now=NOW).instance_id == INSTANCE
