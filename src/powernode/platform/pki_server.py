"""The platform's own TLS identity for embedded and demo use.

A production platform is given ``tls_cert_file``/``tls_key_file`` from the
site's PKI. Without them (``tls = true`` and both empty) the platform makes a
self-signed *platform CA* — separate from the node CA, which only signs
node client certificates — and a server certificate from it for the hosts it
is reached by. The agent pins that CA (``--platform-ca``), as a SPIRE agent
pins its trust bundle. The server certificate is re-issued (same CA) when it
is missing, does not cover the hosts, does not chain to the CA or is within
``RENEW_BEFORE`` of expiry; the CA itself is never replaced silently.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from powernode.durable import write_bytes
from powernode.errors import ConfigError
from powernode.platform.pki_files import (
    CLOCK_SKEW,
    cert_pem,
    cert_public_raw_safe,
    key_pem,
    load_or_create_ca,
    public_raw,
    read_certificate,
    read_ed25519_key,
)

log = logging.getLogger(__name__)

PLATFORM_CA_CERT_FILE = "platform-ca.pem"
PLATFORM_CA_KEY_FILE = "platform-ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
SERVER_LIFETIME = timedelta(days=397)  # CA/B Forum ceiling for server certificates
RENEW_BEFORE = timedelta(days=30)
# Compiled on first use: the bounded repeats make it dear to compile (~10 ms of the start).
_DNS_NAME = r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$"


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not re.match(_DNS_NAME, host):
        raise ConfigError(
            f"host {host!r} is neither an IP address nor a DNS name; fix the platform's host "
            "setting (the server certificate must name it)"
        )
    return x509.DNSName(host.rstrip(".").lower())


def _covers(cert: x509.Certificate, wanted: list[x509.GeneralName]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(entry in san for entry in wanted)


def _server_cert(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    key: Ed25519PrivateKey,
    *,
    names: list[x509.GeneralName],
    hosts: list[str],
    now: datetime,
) -> x509.Certificate:
    not_after = min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # RFC 6125 §6.4.4: clients match the SAN; the CN is informational.
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, None)
    )


def _usable(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    names: list[x509.GeneralName],
    now: datetime,
) -> str:
    """Why the existing server certificate must be re-issued ("" when it is fine)."""
    if not cert_path.exists() or not key_path.exists():
        return "missing"
    cert = read_certificate(cert_path, "server certificate")
    key = read_ed25519_key(key_path, "server key")
    if cert_public_raw_safe(cert) != public_raw(key):
        return "key does not match"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not issued by the platform CA"
    if not _covers(cert, names):
        return "hosts changed"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return "expires soon"
    return ""


def load_or_create_server_identity(
    directory: Path, hosts: list[str], *, now: datetime
) -> tuple[Path, Path, Path]:
    """(server_cert, server_key, platform_ca_pem_path) under ``directory``, created as needed."""
    if not hosts:
        raise ConfigError("the server certificate needs at least one host name or address")
    names = [_san_entry(h) for h in hosts]
    ca_key, ca_cert = load_or_create_ca(
        directory / PLATFORM_CA_CERT_FILE,
        directory / PLATFORM_CA_KEY_FILE,
        "powernode platform CA",
        now,
    )
    cert_path, key_path = directory / SERVER_CERT_FILE, directory / SERVER_KEY_FILE
    why = _usable(cert_path, key_path, ca_cert, names, now)
    if why:
        key = Ed25519PrivateKey.generate()
        cert = _server_cert(ca_key, ca_cert, key, names=names, hosts=hosts, now=now)
        # Key first: a crash in between leaves a mismatch, which the next start repairs.
        write_bytes(key_path, key_pem(key), mode=0o600)
        write_bytes(cert_path, cert_pem(cert), mode=0o644)
        log.info("issued server certificate %s for %s (%s)", cert_path, ", ".join(hosts), why)
    return cert_path, key_path, directory / PLATFORM_CA_CERT_FILE
