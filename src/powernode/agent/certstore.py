"""The node's key and certificate on disk, written so that no crash leaves a broken pair.

Layout of ``<state>/pki`` (seed 000: "persists cert at
/persist/var/lib/powernode/pki/ (mode 0600)"), directory mode 0700::

    key.pem               the node's Ed25519 private key (PKCS#8 PEM, 0600)
    cert.pem              its client certificate from the platform's node CA
    node-ca.pem           the CA that issued cert.pem (from the enroll answer)
    platform-ca.pem       the trust anchor the platform's TLS server must chain to
    key.next.pem          a key staged for enrollment or rotation (0600)
    cert.<UTC time>.pem   certificates replaced by a rotation (newest 16 kept)

Every file is written to a temp file in the same directory, fsynced and
renamed (``os.replace``), then the directory is fsynced. A new key/cert pair
is installed in an order that a crash can only interrupt in a repairable
way: the new key is staged first, the old certificate archived, the new
certificate renamed into place, and only then the staged key renamed over
``key.pem``. :meth:`CertStore.load` finishes that last step if a crash
came between the two renames (the certificate then matches ``key.next.pem``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from powernode.durable import fsync_dir, write_bytes
from powernode.errors import ConfigError, DataError, VerificationError

log = logging.getLogger(__name__)

INSTANCE_URI_PREFIX = "urn:powernode:instance:"  # docs/node-api.md
MAX_PEM_BYTES = 256 << 10
KEEP_ARCHIVED = 16
_ARCHIVE = re.compile(r"cert\.(\d{8}T\d{6}Z)(?:-\d+)?\.pem")


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def build_csr(key: Ed25519PrivateKey, common_name: str) -> bytes:
    """A PEM CSR for ``key``; the platform names the certificate, the CN is only a hint."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "powernode-agent")])
    )
    # Ed25519 signs the message itself: no separate hash (RFC 8410 §6).
    return builder.sign(key, None).public_bytes(serialization.Encoding.PEM)


def parse_certificate(pem: bytes | str, where: str) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > MAX_PEM_BYTES:
        raise DataError(f"{where}: certificate larger than {MAX_PEM_BYTES} bytes")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise DataError(f"{where}: not a PEM X.509 certificate ({e})") from e


def parse_certificates(pem: bytes | str, where: str) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > MAX_PEM_BYTES:
        raise DataError(f"{where}: CA bundle larger than {MAX_PEM_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise DataError(f"{where}: not a PEM certificate bundle ({e})") from e
    return certs


def instance_id_of(cert: x509.Certificate) -> str:
    """The instance UUID the certificate names: its URI SAN, else its subject CN."""
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(INSTANCE_URI_PREFIX):
                return uri[len(INSTANCE_URI_PREFIX) :]
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


@dataclass(frozen=True)
class CertInfo:
    """What the agent needs to know about its certificate."""

    instance_id: str
    not_before: datetime
    not_after: datetime
    serial: int
    sha256: str  # fingerprint of the DER, hex

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertInfo:
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            instance_id=instance_id_of(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            serial=cert.serial_number,
            sha256=hashlib.sha256(der).hexdigest(),
        )

    def to_dict(self) -> dict[str, str | int]:
        return {
            "instance_id": self.instance_id,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "serial": self.serial,
            "sha256": self.sha256,
        }


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_issued(
    cert: x509.Certificate, key: Ed25519PrivateKey, issuers: list[x509.Certificate], now: datetime
) -> None:
    """Raise unless ``cert`` is for ``key``, signed by one of ``issuers`` and not expired."""
    got = cert.public_key()
    if not isinstance(got, type(key.public_key())) or got.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) != public_raw(key):
        raise VerificationError(
            "the platform returned a certificate for a different public key than our CSR's; "
            "refusing it (nothing written)"
        )
    if issuers:
        for ca in issuers:
            try:
                cert.verify_directly_issued_by(ca)
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        else:
            raise VerificationError(
                f"certificate {cert.serial_number:x} is not signed by the node CA the platform "
                "sent; refusing it (nothing written)"
            )
    if cert.not_valid_after_utc <= now:
        raise VerificationError(
            "the platform returned a certificate that expired at "
            f"{rfc3339(cert.not_valid_after_utc)} (now {rfc3339(now)}); "
            "check the node's clock and the platform's CA"
        )


@dataclass(frozen=True)
class Credentials:
    """Paths for the TLS client plus what the certificate says."""

    cert_file: Path
    key_file: Path
    platform_ca_file: Path
    info: CertInfo


class CertStore:
    """The ``pki`` directory."""

    def __init__(self, pki_dir: Path) -> None:
        self.dir = pki_dir
        self.key = pki_dir / "key.pem"
        self.cert = pki_dir / "cert.pem"
        self.next_key = pki_dir / "key.next.pem"
        self.node_ca = pki_dir / "node-ca.pem"
        self.platform_ca = pki_dir / "platform-ca.pem"

    def ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def is_enrolled(self) -> bool:
        return self.cert.exists() and (self.key.exists() or self.next_key.exists())

    def stage_key(self, key: Ed25519PrivateKey) -> None:
        """Persist a new key before its CSR leaves the node, so a crash cannot orphan a cert."""
        self.ensure_dir()
        write_bytes(self.next_key, key_to_pem(key), mode=0o600)

    def install(
        self,
        cert_pem: bytes,
        key: Ed25519PrivateKey,
        now: datetime,
        node_ca_pem: bytes | None = None,
        platform_ca_pem: bytes | None = None,
    ) -> CertInfo:
        """Verify and install ``cert_pem`` for the staged ``key``; archive the previous cert."""
        cert = parse_certificate(cert_pem, "issued certificate")
        issuers = parse_certificates(node_ca_pem, "node CA") if node_ca_pem else self._node_cas()
        check_issued(cert, key, issuers, now)
        staged = self._read(self.next_key, "staged key")
        if staged != key_to_pem(key):
            raise ConfigError(
                f"{self.next_key}: does not hold the key this certificate was requested for "
                "(another enroll or rotation ran at the same time?); try again"
            )
        if platform_ca_pem is not None:
            parse_certificates(platform_ca_pem, "platform CA")
            write_bytes(self.platform_ca, platform_ca_pem, mode=0o644)
        if node_ca_pem is not None:
            write_bytes(self.node_ca, node_ca_pem, mode=0o644)
        if self.cert.exists():
            self._archive(now)
        write_bytes(self.cert, cert_pem, mode=0o644)
        os.replace(self.next_key, self.key)
        fsync_dir(self.dir)
        info = CertInfo.of(cert)
        log.info(
            "installed certificate serial %x for instance %s, valid until %s",
            info.serial,
            info.instance_id,
            rfc3339(info.not_after),
        )
        return info

    def load(self) -> Credentials:
        """The installed pair, repairing a rotation a crash interrupted between its renames."""
        if not self.cert.exists():
            raise ConfigError(
                f"{self.cert}: not enrolled yet; run "
                "'powernode-agent enroll --token-file FILE' (FILE holding the bootstrap "
                "token) first"
            )
        cert = parse_certificate(self._read(self.cert, "certificate"), str(self.cert))
        cert_pub = cert.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if not self._key_matches(self.key, cert_pub):
            if self._key_matches(self.next_key, cert_pub):
                log.warning("%s: finishing an interrupted key rotation", self.dir)
                os.replace(self.next_key, self.key)
                fsync_dir(self.dir)
            else:
                raise ConfigError(
                    f"{self.key}: does not match {self.cert} and no staged key does; "
                    "re-enroll with 'powernode-agent enroll --force --token-file FILE' "
                    "(FILE holding a new bootstrap token)"
                )
        if not self.platform_ca.exists():
            raise ConfigError(
                f"{self.platform_ca}: missing; re-enroll, giving --platform-ca <PEM file>"
            )
        return Credentials(self.cert, self.key, self.platform_ca, CertInfo.of(cert))

    def info(self) -> CertInfo | None:
        if not self.cert.exists():
            return None
        return CertInfo.of(parse_certificate(self._read(self.cert, "certificate"), str(self.cert)))

    def archived(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _ARCHIVE.fullmatch(p.name))

    def _archive(self, now: datetime) -> None:
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.dir / f"cert.{stamp}.pem"
        n = 0
        while target.exists():  # two rotations in one second: keep both
            n += 1
            target = self.dir / f"cert.{stamp}-{n}.pem"
        write_bytes(target, self._read(self.cert, "certificate"), mode=0o644)
        for old in self.archived()[:-KEEP_ARCHIVED]:
            old.unlink()

    def _node_cas(self) -> list[x509.Certificate]:
        if not self.node_ca.exists():
            return []
        return parse_certificates(self._read(self.node_ca, "node CA"), str(self.node_ca))

    def _key_matches(self, path: Path, cert_pub: bytes) -> bool:
        try:
            key = serialization.load_pem_private_key(self._read(path, "key"), None)
        except FileNotFoundError:
            return False
        except ValueError:
            log.warning("%s: not a PEM private key; ignoring it", path)
            return False
        if not isinstance(key, Ed25519PrivateKey):
            return False
        return public_raw(key) == cert_pub

    def load_key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(self._read(self.key, "key"), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{self.key}: not an Ed25519 key; re-enroll with --force")
        return key

    @staticmethod
    def _read(path: Path, what: str) -> bytes:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
        if len(data) > MAX_PEM_BYTES:
            raise DataError(f"{path}: {what} larger than {MAX_PEM_BYTES} bytes")
        return data
