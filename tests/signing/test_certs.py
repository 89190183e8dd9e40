"""Certificate helpers: the issuer extension's DER, path length, critical extensions."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.signing import CertificateError
from powernode.signing.certs import _der_utf8string, verify_chain
from tests.signing.testca import T0, FakeCA, _ca_usage, _name


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x0c\x05hello", "hello"),
        (b"\x0c\x81\x80" + b"a" * 128, "a" * 128),
        (b"\x0c\x00", ""),
    ],
)
def test_der_utf8string(data: bytes, expected: str) -> None:
    assert _der_utf8string(data, "ext") == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x13\x05hello", "is not a DER UTF8String"),  # PrintableString
        (b"\x0c\x06hello", "does not match the extension size"),
        (b"\x0c\x81\x05hello", "non-minimal DER length"),
        (b"\x0c\x02\xff\xfe", "is not valid UTF-8"),
        (b"\x0c", "is not a DER UTF8String"),
    ],
)
def test_der_utf8string_rejects(data: bytes, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        _der_utf8string(data, "ext")


def test_path_length_is_enforced() -> None:
    ca = FakeCA()  # its intermediate has pathLen 0
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = (
        x509.CertificateBuilder()
        .subject_name(_name("sub intermediate"))
        .issuer_name(ca.intermediate.subject)
        .public_key(sub_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.not_before)
        .not_valid_after(ca.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(ca.inter_key, hashes.SHA384())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.leaf(leaf_key)
    # Re-issue the leaf under the sub-CA.
    leaf = (
        x509.CertificateBuilder(extensions=list(leaf.extensions))
        .subject_name(leaf.subject)
        .issuer_name(sub.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .sign(sub_key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match=r"allows 0 intermediate.* the path has 1"):
        verify_chain(leaf, [sub, ca.intermediate], [ca.root], T0)


def test_unknown_critical_extension_is_refused() -> None:
    ca = FakeCA()
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.leaf(key)
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = (
        x509.CertificateBuilder(extensions=[*leaf.extensions, x509.Extension(odd.oid, True, odd)])
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .sign(ca.inter_key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match=r"critical extension 1\.3\.6\.1\.4\.1\.99999\.1"):
        verify_chain(leaf, [ca.intermediate], [ca.root], T0)
