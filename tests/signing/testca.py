"""A small Fulcio-shaped test CA: root → intermediate → leaf, built with cryptography.

The leaf mirrors what Fulcio issues: empty subject, critical SAN (URI or
email), keyUsage digitalSignature, EKU codeSigning, and the OIDC issuer in
extension 1.3.6.1.4.1.57264.1.8 (DER UTF8String) or the legacy .1.1 (raw).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/acme/modules/.github/workflows/build.yaml@refs/heads/main"

T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 0x100
    length = bytes([len(raw)]) if len(raw) < 0x80 else bytes([0x81, len(raw)])
    return b"\x0c" + length + raw


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "powernode test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class FakeCA:
    name: str = "root"
    not_before: datetime.datetime = T0 - 365 * DAY
    not_after: datetime.datetime = T0 + 365 * DAY
    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    inter_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    root: x509.Certificate = field(init=False)
    intermediate: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.root = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{self.name} CA"))
            .issuer_name(_name(f"{self.name} CA"))
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .sign(self.root_key, hashes.SHA384())
        )
        self.intermediate = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{self.name} intermediate"))
            .issuer_name(self.root.subject)
            .public_key(self.inter_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .sign(self.root_key, hashes.SHA384())
        )

    @property
    def root_pem(self) -> bytes:
        return pem(self.root)

    @property
    def chain_pem(self) -> bytes:
        """What cosign puts in dev.sigstore.cosign/chain: intermediate, then root."""
        return pem(self.intermediate) + pem(self.root)

    def leaf(
        self,
        key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
        *,
        uri: str | None = WORKFLOW,
        email: str | None = None,
        issuer: str | None = GITHUB_ISSUER,
        issuer_ext: Literal["v1", "v2"] = "v2",
        not_before: datetime.datetime = T0 - datetime.timedelta(minutes=5),
        not_after: datetime.datetime = T0 + datetime.timedelta(minutes=5),
        code_signing: bool = True,
    ) -> x509.Certificate:
        names: list[x509.GeneralName] = []
        if uri is not None:
            names.append(x509.UniformResourceIdentifier(uri))
        if email is not None:
            names.append(x509.RFC822Name(email))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(_leaf_usage(), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
        if code_signing:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
        if issuer is not None:
            value = der_utf8(issuer) if issuer_ext == "v2" else issuer.encode()
            oid = ISSUER_V2 if issuer_ext == "v2" else ISSUER_V1
            builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
        return builder.sign(self.inter_key, hashes.SHA384())
