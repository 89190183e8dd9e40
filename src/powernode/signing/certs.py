"""Certificates of keyless (Fulcio-style) signatures: parsing, chain, identity.

cosign attaches the signing certificate and its chain as PEM in the layer
annotations ``dev.sigstore.cosign/certificate`` and ``dev.sigstore.cosign/chain``
(cosign ``specs/SIGNATURE_SPEC.md``). The chain is untrusted: it only helps
build a path to one of the roots the policy configures.

Path validation is a strict subset of RFC 5280 §6.1, enough for Fulcio and
small private CAs: every certificate's signature is checked with
``cryptography``'s ``verify_directly_issued_by``, every certificate on the
path (root included) must be valid at the verification time, issuers must be
CAs (basicConstraints cA, keyCertSign if keyUsage is present, pathLen
honoured), unknown critical extensions and name constraints are refused, and
extended key usage must allow code signing along the path (as Go's x509 does
for cosign). ``cryptography``'s own X.509 verifier is not used because it only
knows the TLS server/client EKUs and rejects Fulcio's code-signing chain.

Identity (Fulcio's certificate profile, ``docs/oid-info.md``): the SAN URI or
email; issuer: extension 1.3.6.1.4.1.57264.1.8 (a DER UTF8String) or the
legacy 1.3.6.1.4.1.57264.1.1 (the raw string).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from powernode.signing.errors import CertificateError

FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")

MAX_CERTIFICATE_PEM = 16 << 10
MAX_CHAIN_PEM = 64 << 10
MAX_CHAIN_LENGTH = 8

# Critical extensions this module understands; any other critical extension
# makes a certificate unusable (RFC 5280 §4.2).
_HANDLED_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
}


def load_certificates(
    pem: bytes, what: str, *, limit: int = MAX_CHAIN_PEM
) -> list[x509.Certificate]:
    """All certificates in a PEM bundle; ``what`` names the bundle in errors."""
    if len(pem) > limit:
        raise CertificateError(f"{what} is {len(pem)} bytes; the limit is {limit}")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise CertificateError(f"{what} is not PEM-encoded X.509: {e}") from e
    if len(certs) > MAX_CHAIN_LENGTH:
        raise CertificateError(
            f"{what} holds {len(certs)} certificates; the limit is {MAX_CHAIN_LENGTH}"
        )
    return certs


def load_certificate(pem: bytes, what: str) -> x509.Certificate:
    """Exactly one certificate from ``pem``."""
    certs = load_certificates(pem, what, limit=MAX_CERTIFICATE_PEM)
    if len(certs) != 1:
        raise CertificateError(f"{what} must hold exactly one certificate, found {len(certs)}")
    return certs[0]


def describe(cert: x509.Certificate) -> str:
    """A short name for messages: the subject, or the SAN when the subject is empty."""
    subject = cert.subject.rfc4514_string()
    if subject:
        return subject
    names = certificate_identities(cert)
    return f"<{names[0]}>" if names else f"serial {cert.serial_number:x}"


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime.datetime,
) -> list[x509.Certificate]:
    """The path leaf → … → root, or :class:`CertificateError` saying what broke it."""
    if at.tzinfo is None:
        raise ValueError("verification time must be timezone-aware")
    root_ders = {r.public_bytes(Encoding.DER) for r in roots}
    _check_time(leaf, at, "signing certificate")
    _check_critical(leaf, "signing certificate")
    _require_code_signing(leaf)
    path = [leaf]
    current = leaf
    pool = list(intermediates)
    for _ in range(MAX_CHAIN_LENGTH):
        issuer, is_root = _find_issuer(current, pool, roots)
        if issuer is None:
            known = "; ".join(describe(r) for r in roots) or "none"
            raise CertificateError(
                f"certificate chain leads to an unknown root: {describe(current)} was issued by "
                f"{current.issuer.rfc4514_string() or '<empty name>'}, which is neither in the "
                f"signature's chain nor among the configured roots ({known}); "
                "configure that root if you trust it"
            )
        what = "root" if is_root else "intermediate"
        _check_time(issuer, at, f"{what} certificate {describe(issuer)}")
        _check_critical(issuer, f"{what} certificate {describe(issuer)}")
        _check_ca(issuer, intermediates_below=len(path) - 1, what=f"{what} {describe(issuer)}")
        path.append(issuer)
        if is_root:
            assert issuer.public_bytes(Encoding.DER) in root_ders
            return path
        pool.remove(issuer)
        current = issuer
    raise CertificateError(f"certificate chain is longer than {MAX_CHAIN_LENGTH} certificates")


def certificate_identities(cert: x509.Certificate) -> list[str]:
    """The SAN URIs, then emails: the identities Fulcio certifies."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    uris: list[str] = san.get_values_for_type(x509.UniformResourceIdentifier)
    emails: list[str] = san.get_values_for_type(x509.RFC822Name)
    return uris + emails


def certificate_issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded, or None when the certificate has none."""
    extensions = {e.oid: e.value for e in cert.extensions}
    v2 = extensions.get(FULCIO_ISSUER_V2)
    if isinstance(v2, x509.UnrecognizedExtension):
        return _der_utf8string(v2.value, "OIDC issuer extension 1.3.6.1.4.1.57264.1.8")
    v1 = extensions.get(FULCIO_ISSUER_V1)
    if isinstance(v1, x509.UnrecognizedExtension):
        # The legacy extension holds the bare string, not DER (Fulcio oid-info.md).
        try:
            return v1.value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CertificateError(
                "OIDC issuer extension 1.3.6.1.4.1.57264.1.1 is not UTF-8"
            ) from e
    return None


# -- internals ---------------------------------------------------------------


def _find_issuer(
    cert: x509.Certificate, pool: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> tuple[x509.Certificate | None, bool]:
    # Roots first: a chain that carries its own copy of the root (Fulcio's
    # does) ends at the configured root, whatever the copy says.
    for candidates, is_root in ((roots, True), (pool, False)):
        for candidate in candidates:
            if candidate.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return candidate, is_root
    return None, False


def _check_time(cert: x509.Certificate, at: datetime.datetime, what: str) -> None:
    if at > cert.not_valid_after_utc:
        raise CertificateError(
            f"{what} expired at {cert.not_valid_after_utc.isoformat()} "
            f"(checked at {at.isoformat()}); re-sign the artifact"
        )
    if at < cert.not_valid_before_utc:
        raise CertificateError(
            f"{what} is not valid before {cert.not_valid_before_utc.isoformat()} "
            f"(checked at {at.isoformat()}); check the clock"
        )


def _check_critical(cert: x509.Certificate, what: str) -> None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            raise CertificateError(
                f"{what} has the critical extension {ext.oid.dotted_string}, "
                "which powernode does not process"
            )
        if ext.oid == ExtensionOID.NAME_CONSTRAINTS:
            raise CertificateError(f"{what} has name constraints, which powernode does not process")


def _check_ca(cert: x509.Certificate, *, intermediates_below: int, what: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CertificateError(f"{what} is not a CA certificate (basicConstraints cA is not set)")
    if bc.path_length is not None and intermediates_below > bc.path_length:
        raise CertificateError(
            f"{what} allows {bc.path_length} intermediate(s) below it, "
            f"the path has {intermediates_below}"
        )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise CertificateError(f"{what} may not sign certificates (keyUsage lacks keyCertSign)")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    allowed = {ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if not allowed & set(eku):
        raise CertificateError(f"{what} restricts extended key usage and excludes code signing")


def _require_code_signing(leaf: x509.Certificate) -> None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as e:
        raise CertificateError(
            f"signing certificate {describe(leaf)} has no extended key usage; "
            "a signing certificate must allow code signing (1.3.6.1.5.5.7.3.3)"
        ) from e
    if ExtendedKeyUsageOID.CODE_SIGNING not in set(eku):
        raise CertificateError(
            f"signing certificate {describe(leaf)} does not allow code signing (1.3.6.1.5.5.7.3.3)"
        )
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.digital_signature:
        raise CertificateError(
            f"signing certificate {describe(leaf)}: keyUsage lacks digitalSignature"
        )


def _der_utf8string(data: bytes, what: str) -> str:
    """Decode one DER UTF8String (tag 0x0C, definite length, X.690 §8.21)."""
    if len(data) < 2 or data[0] != 0x0C:
        raise CertificateError(f"{what} is not a DER UTF8String")
    length, offset = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 2 or len(data) < 2 + count:
            raise CertificateError(f"{what} has an invalid DER length")
        length = int.from_bytes(data[2 : 2 + count], "big")
        offset = 2 + count
        if length < 0x80 or (count == 2 and length < 0x100):
            raise CertificateError(f"{what} has a non-minimal DER length")
    if len(data) != offset + length:
        raise CertificateError(f"{what}: DER length {length} does not match the extension size")
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise CertificateError(f"{what} is not valid UTF-8") from e
