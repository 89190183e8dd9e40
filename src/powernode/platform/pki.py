"""The platform's node CA: issues client certificates to enrolled nodes and verifies them.

A node proves who it is with a certificate from this CA (docs/node-api.md):

- subject ``CN=<instance uuid>``, URI SAN ``urn:powernode:instance:<uuid>``
  (both name the instance; the API takes the identity from here, never from
  a request body);
- Ed25519 keys only (RFC 8410), extended key usage ``clientAuth``
  (RFC 5280 §4.2.1.12), not a CA, backdated 5 minutes for clock skew.

``verify_peer`` is on every node request (heartbeats: thousands per second),
so the parsed, signature-checked result is cached by the certificate's
DER bytes in a bounded LRU; the validity window is still checked
against ``now`` on every call. Revocation is the caller's job (the node API
checks the instance's live identity, services/nodeapi/identity.py). The TLS
server may be set to skip time checks (tlsserve.py) precisely so that an
expired certificate gets the clear message below instead of a bare TLS alert.

The server's own TLS identity for embedded use is in :mod:`pki_server`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from powernode.platform.pki_files import CLOCK_SKEW, cert_pem, load_or_create_ca
from powernode.platform.pki_server import load_or_create_server_identity
from powernode.platform.problems import AuthenticationError, InvalidInputError

__all__ = [
    "INSTANCE_URI_PREFIX",
    "IssuedCertificate",
    "NodeCA",
    "NodePeer",
    "load_or_create_server_identity",
]

log = logging.getLogger(__name__)

INSTANCE_URI_PREFIX = "urn:powernode:instance:"
CA_CERT_FILE = "node-ca.pem"
CA_KEY_FILE = "node-ca.key"
CA_NAME = "powernode node CA"
# A PEM Ed25519 CSR is ~400 bytes; the limit leaves room for a long subject.
MAX_CSR_BYTES = 16 * 1024
MAX_CERT_DER_BYTES = 16 * 1024
MAX_LIFETIME = timedelta(days=825)  # the CA/B Forum's old ceiling; nodes rotate long before
PEER_CACHE_SIZE = 16_384


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: str
    serial: str  # lowercase hex, no 0x
    fingerprint_sha256: str  # lowercase hex of SHA-256 over the DER
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class NodePeer:
    instance_id: str  # from the URI SAN (the CN agrees)
    serial: str
    fingerprint_sha256: str
    not_after: datetime


@dataclass(frozen=True)
class _Checked:
    """What verify_peer learned from a certificate once; only the window is rechecked."""

    peer: NodePeer
    not_before: datetime


def _canonical_uuid(value: str) -> str | None:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    text = str(parsed)
    return text if text == value else None


class NodeCA:
    """The CA that signs node client certificates. Thread-safe."""

    def __init__(
        self, key: Ed25519PrivateKey, cert: x509.Certificate, *, cache_size: int = PEER_CACHE_SIZE
    ) -> None:
        self._key = key
        self._cert = cert
        self.ca_pem: str = cert_pem(cert).decode()
        self._ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        self._cache: OrderedDict[bytes, _Checked] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def load_or_create(cls, directory: Path, *, now: datetime) -> NodeCA:
        """The CA in ``directory`` (node-ca.pem, node-ca.key), created on first use."""
        key, cert = load_or_create_ca(
            directory / CA_CERT_FILE, directory / CA_KEY_FILE, CA_NAME, now
        )
        return cls(key, cert)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def cached_peers(self) -> int:
        """How many verified certificates the LRU holds (bounded by ``cache_size``)."""
        return len(self._cache)

    # -- issuing --------------------------------------------------------------------------

    def issue(
        self, csr_pem: str, instance_id: str, *, now: datetime, lifetime: timedelta
    ) -> IssuedCertificate:
        """A client certificate for ``instance_id`` over the CSR's Ed25519 key.

        The CSR only contributes its public key (after its self-signature is
        checked, proving the caller holds the private key, RFC 2986 §3); the
        subject, SAN and extensions are the platform's.
        """
        if _canonical_uuid(instance_id) is None:
            raise InvalidInputError(
                f"instance id {instance_id!r} is not a lowercase canonical UUID",
                field="instance_id",
            )
        if not timedelta(0) < lifetime <= MAX_LIFETIME:
            raise InvalidInputError(
                f"certificate lifetime {lifetime} is outside (0, {MAX_LIFETIME.days} days]; "
                "fix node_cert_lifetime_days"
            )
        public = _parse_csr(csr_pem)
        not_after = now + lifetime
        if not_after > self._cert.not_valid_after_utc:
            # A certificate must not outlive its issuer (RFC 5280 §6.1.3 would reject it).
            log.warning("node certificate for %s clipped to the CA's expiry", instance_id)
            not_after = self._cert.not_valid_after_utc
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, instance_id)]))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(INSTANCE_URI_PREFIX + instance_id)]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski),
                critical=False,
            )
            .sign(self._key, None)
        )
        der = cert.public_bytes(Encoding.DER)
        issued = IssuedCertificate(
            certificate_pem=cert_pem(cert).decode(),
            serial=format(cert.serial_number, "x"),
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )
        log.info(
            "issued node certificate serial %s for instance %s until %s",
            issued.serial,
            instance_id,
            issued.not_after.isoformat(),
        )
        return issued

    # -- verifying ------------------------------------------------------------------------

    def verify_peer(self, cert_der: bytes, *, now: datetime) -> NodePeer:
        """The node a client certificate names, or AuthenticationError saying why not."""
        if len(cert_der) > MAX_CERT_DER_BYTES:
            raise AuthenticationError(
                f"client certificate of {len(cert_der)} bytes is over the "
                f"{MAX_CERT_DER_BYTES}-byte limit; present the certificate the platform issued"
            )
        # Keyed by the DER itself: equal bytes are the same certificate, and the TLS
        # layer hands the same bytes object for every request on a connection, whose
        # hash Python caches, so a hit costs no SHA-256 (bench_heartbeats).
        key = bytes(cert_der)
        with self._lock:
            checked = self._cache.get(key)
            if checked is not None:
                self._cache.move_to_end(key)
        if checked is None:
            checked = self._check(key, hashlib.sha256(key).hexdigest())
            with self._lock:
                self._cache[key] = checked
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        _check_window(checked, now)
        return checked.peer

    def _check(self, der: bytes, fingerprint: str) -> _Checked:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise AuthenticationError(
                f"client certificate is not DER X.509 ({e}); present the certificate the "
                "platform issued at enrollment"
            ) from e
        serial = format(cert.serial_number, "x")
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise AuthenticationError(
                f"client certificate serial {serial} was issued by {cert.issuer.rfc4514_string()}, "
                "not by this platform's node CA (or its signature is wrong); enroll the node "
                "with a bootstrap token from this platform",
                serial=serial,
            ) from e
        if not isinstance(cert.public_key(), Ed25519PublicKey):
            raise AuthenticationError(
                f"client certificate serial {serial} holds a foreign key type "
                f"({_key_kind(cert.public_key())}); node certificates are Ed25519",
                serial=serial,
            )
        try:
            _require_leaf_client(cert, serial)
            instance_id = _instance_of(cert, serial)
        except ValueError as e:  # extensions are parsed lazily: malformed DER shows here
            raise AuthenticationError(
                f"certificate serial {serial} has malformed extensions ({e}); re-enroll the node",
                serial=serial,
            ) from e
        peer = NodePeer(
            instance_id=instance_id,
            serial=serial,
            fingerprint_sha256=fingerprint,
            not_after=cert.not_valid_after_utc,
        )
        return _Checked(peer=peer, not_before=cert.not_valid_before_utc)


def _key_kind(public: object) -> str:
    """A name an operator recognises: "RSA-2048", "ECDSA secp256r1", "Ed448"."""
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA-{public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ECDSA {public.curve.name}"
    if isinstance(public, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public).__name__.removeprefix("_")


def _parse_csr(csr_pem: str) -> Ed25519PublicKey:
    if len(csr_pem) > MAX_CSR_BYTES:
        raise InvalidInputError(
            f"csr_pem is {len(csr_pem)} characters, over the {MAX_CSR_BYTES} limit; send one "
            "PEM CERTIFICATE REQUEST",
            field="csr_pem",
        )
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except (ValueError, UnicodeEncodeError) as e:
        raise InvalidInputError(
            f"csr_pem is not a PEM certificate signing request ({e}); send the "
            "'-----BEGIN CERTIFICATE REQUEST-----' block the agent made",
            field="csr_pem",
        ) from e
    try:
        public = csr.public_key()
    except ValueError as e:  # an algorithm the library does not know
        raise InvalidInputError(
            f"csr_pem: foreign key type ({e}); the node API accepts Ed25519 CSRs only",
            field="csr_pem",
        ) from e
    if not isinstance(public, Ed25519PublicKey):
        raise InvalidInputError(
            f"csr_pem: foreign key type {_key_kind(public)}; the node API "
            "accepts Ed25519 CSRs only (RFC 8410) — generate the key with the powernode agent",
            field="csr_pem",
        )
    if not csr.is_signature_valid:
        raise InvalidInputError(
            "csr_pem: the CSR's self-signature does not verify, so it does not prove possession "
            "of the key; generate a fresh CSR",
            field="csr_pem",
        )
    return public


def _require_leaf_client(cert: x509.Certificate, serial: str) -> None:
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if basic.ca:
            raise AuthenticationError(
                f"certificate serial {serial} is a CA certificate, not a node certificate",
                serial=serial,
            )
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise AuthenticationError(
            f"certificate serial {serial} is not for client authentication (extended key usage "
            "lacks clientAuth); present the node certificate from enrollment",
            serial=serial,
        )


def _instance_of(cert: x509.Certificate, serial: str) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [
            u
            for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith(INSTANCE_URI_PREFIX)
        ]
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1:
        raise AuthenticationError(
            f"certificate serial {serial} names {len(uris)} instances (URI SAN "
            f"{INSTANCE_URI_PREFIX}<uuid>), exactly one is required; re-enroll the node",
            serial=serial,
        )
    instance_id = uris[0][len(INSTANCE_URI_PREFIX) :]
    if _canonical_uuid(instance_id) is None:
        raise AuthenticationError(
            f"certificate serial {serial}: URI SAN instance {instance_id!r} is not a canonical "
            "UUID; re-enroll the node",
            serial=serial,
        )
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [instance_id]:
        raise AuthenticationError(
            f"certificate serial {serial}: subject CN {', '.join(cns) or '(none)'} does not "
            f"agree with the URI SAN instance {instance_id}; re-enroll the node",
            serial=serial,
        )
    return instance_id


def _check_window(checked: _Checked, now: datetime) -> None:
    peer = checked.peer
    if now < checked.not_before:
        raise AuthenticationError(
            f"certificate serial {peer.serial} is not valid before "
            f"{checked.not_before.isoformat()} (platform time {now.isoformat()}); check the "
            "clocks (NTP) of the node and the platform",
            serial=peer.serial,
        )
    if now > peer.not_after:
        raise AuthenticationError(
            f"certificate serial {peer.serial} expired at {peer.not_after.isoformat()}; the "
            "agent rotates at 75 % of the lifetime — re-enroll with a new bootstrap token",
            serial=peer.serial,
        )
