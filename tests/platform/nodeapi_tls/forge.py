"""Certificates and CSRs the node CA must refuse, built with a CA key the test holds.

``forge_cert`` makes a certificate shaped like a node certificate with one
thing changed (EKU, SAN, CN, window, key type, issuer), so each refusal test
changes exactly what it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from powernode.platform.pki import INSTANCE_URI_PREFIX

INSTANCE = "0b8e6a3e-6f55-4d4b-9c3a-2f1e0d9c8b7a"
OTHER = "7d9c2f4e-1a3b-4c5d-8e6f-9a0b1c2d3e4f"


@dataclass
class CA:
    key: Ed25519PrivateKey
    cert: x509.Certificate


def load_ca(directory: Path) -> CA:
    """The node CA's own pair, from the files NodeCA.load_or_create wrote."""
    key = serialization.load_pem_private_key((directory / "node-ca.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    cert = x509.load_pem_x509_certificate((directory / "node-ca.pem").read_bytes())
    return CA(key, cert)


def other_ca(now: datetime) -> CA:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, None)
    )
    return CA(key, cert)


def csr(key: object, cn: str = "node") -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    algorithm = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    signed = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return signed.public_bytes(serialization.Encoding.PEM).decode()


def ecdsa_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def forge_cert(
    ca: CA,
    *,
    now: datetime,
    instance: str = INSTANCE,
    cn: str | None = None,
    uris: list[str] | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key: object | None = None,
    is_ca: bool = False,
    malformed_eku: bool = False,
) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    """A node-shaped certificate; returns it with its Ed25519 key (or the given key)."""
    leaf = key if key is not None else Ed25519PrivateKey.generate()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or instance)]))
        .issuer_name(ca.cert.subject)
        .public_key(leaf.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    usages = eku if eku is not None else [ExtendedKeyUsageOID.CLIENT_AUTH]
    if malformed_eku:
        # An ExtKeyUsageSyntax is SEQUENCE SIZE (1..MAX) OF KeyPurposeId (RFC 5280
        # 4.2.1.12): the empty SEQUENCE (30 00) is malformed. Written as raw DER so
        # the test does not depend on the library agreeing to encode it.
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ExtensionOID.EXTENDED_KEY_USAGE, b"\x30\x00"),
            critical=False,
        )
    elif usages:  # [] leaves the extension out
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names = uris if uris is not None else [INSTANCE_URI_PREFIX + instance]
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in names]),
            critical=False,
        )
    cert = builder.sign(ca.key, None)
    return cert, leaf  # type: ignore[return-value]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
