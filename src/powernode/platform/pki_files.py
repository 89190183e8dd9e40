"""Key and certificate files of the platform's PKI: atomic writes, careful reads.

A CA is a pair of files (``<name>.pem`` + ``<name>.key``). Keys are Ed25519
(RFC 8410), PKCS#8 PEM without a passphrase, mode 0600, written with a temp
file in the same directory, fsync and ``os.replace`` so that a crash leaves
either the old file or the new one. A pair that does not belong together is
refused with the name of the file to fix; nothing is ever overwritten.
"""

from __future__ import annotations

import logging
import stat
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from powernode.durable import write_bytes
from powernode.errors import ConfigError

log = logging.getLogger(__name__)

# A PEM certificate or key of ours is < 2 KiB; anything much larger is not one.
MAX_PEM_FILE_BYTES = 64 * 1024
CA_LIFETIME = timedelta(days=3650)
# Certificates are backdated so that a node whose clock is a little behind
# does not see a certificate from the future (kubelet/SPIRE do the same).
CLOCK_SKEW = timedelta(minutes=5)


def ensure_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{directory}: cannot create the PKI directory: {e.strerror}") from e


def _read(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_PEM_FILE_BYTES:
            raise ConfigError(
                f"{path}: {size} bytes is too large for a {what} (limit {MAX_PEM_FILE_BYTES}); "
                "point the setting at the PEM file itself"
            )
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what}: {e.strerror}") from e


def read_certificate(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, what))
    except ValueError as e:
        raise ConfigError(
            f"{path}: not a PEM certificate ({e}); restore the {what} from a backup"
        ) from e


def read_ed25519_key(path: Path, what: str) -> Ed25519PrivateKey:
    data = _read(path, what)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s: the %s is readable by others (mode %o); chmod 600 it", path, what, mode)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"{path}: not an unencrypted PEM private key ({e}); the {what} must be PKCS#8 "
            "PEM without a passphrase"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path}: the {what} is a {type(key).__name__}, not Ed25519; the platform's CAs "
            "sign with Ed25519 only (RFC 8410)"
        )
    return key


def key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cert_public_raw(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def self_signed_ca(key: Ed25519PrivateKey, common_name: str, now: datetime) -> x509.Certificate:
    """A root CA certificate for ``key`` (RFC 5280 §4.2.1.9: CA, path length 0)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "powernode"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, None)  # Ed25519 hashes internally: no digest (RFC 8410 §6)
    )


def load_or_create_ca(
    cert_path: Path, key_path: Path, common_name: str, now: datetime
) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """The CA pair at ``cert_path``/``key_path``, created when both are missing.

    A key without its certificate (a crash between the two writes: the key
    is written first) gets a new self-signed certificate; a certificate
    without its key, or a pair that does not match, is refused.
    """
    ensure_private_dir(cert_path.parent)
    has_cert, has_key = cert_path.exists(), key_path.exists()
    if has_cert and not has_key:
        raise ConfigError(
            f"{key_path}: missing, but {cert_path} exists; restore the CA key from a backup "
            f"(or move both files away to start a new CA: every certificate it issued is lost)"
        )
    if has_key:
        key = read_ed25519_key(key_path, "CA key")
    else:
        key = Ed25519PrivateKey.generate()
        write_bytes(key_path, key_pem(key), mode=0o600)
        log.info("created CA key %s", key_path)
    if not has_cert:
        cert = self_signed_ca(key, common_name, now)
        write_bytes(cert_path, cert_pem(cert), mode=0o644)
        log.info("created CA certificate %s (%s)", cert_path, common_name)
        return key, cert
    cert = read_certificate(cert_path, "CA certificate")
    if cert_public_raw_safe(cert) != public_raw(key):
        raise ConfigError(
            f"{key_path}: this key does not match the certificate {cert_path}; put back the key "
            "that belongs to that certificate (the CA's certificate is what nodes trust)"
        )
    if now > cert.not_valid_after_utc:
        raise ConfigError(
            f"{cert_path}: the CA certificate expired at {cert.not_valid_after_utc.isoformat()}; "
            "no certificate it signs can be trusted — create a new CA and re-enroll the nodes"
        )
    return key, cert


def cert_public_raw_safe(cert: x509.Certificate) -> bytes:
    """The raw Ed25519 public key of ``cert``, or b"" for any other key type."""
    try:
        return cert_public_raw(cert)
    except ValueError:
        return b""
