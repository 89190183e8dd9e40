"""Enrollment: a bootstrap token and a CSR for a key made here become a client certificate.

Seed 000 (``internal/enroll``): "Bootstrap token → mTLS cert exchange via
POST /node_api/enroll. Generates Ed25519 keypair, builds CSR, persists cert
at /persist/var/lib/powernode/pki/ (mode 0600)". The private key never
leaves the node: it is staged on disk (0600, atomically) before the CSR is
sent, and the answer is checked before anything replaces the installed pair:
the certificate must carry our public key, be signed by the CA in the answer,
name the instance the answer names, and not be expired.

The platform's TLS server is verified against ``platform_ca_pem`` (given by
the operator, like SPIRE's trust bundle): a bootstrap token is a secret and
must only be shown to the real platform.
"""

from __future__ import annotations

import logging
from datetime import datetime

from powernode.agent.certstore import (
    CertInfo,
    CertStore,
    build_csr,
    generate_key,
    instance_id_of,
    parse_certificate,
    parse_certificates,
)
from powernode.agent.transport import NodeClient
from powernode.errors import ConfigError, DataError, VerificationError

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 4096


def check_token(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        raise ConfigError(f"{where}: the bootstrap token is empty; create one on the platform")
    if len(token) > MAX_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            f"{where}: not a bootstrap token (over {MAX_TOKEN_CHARS} characters or containing "
            "spaces); pass the token exactly as the platform printed it"
        )
    return token


def enroll(
    store: CertStore,
    client: NodeClient,
    token: str,
    *,
    platform_ca_pem: bytes,
    now: datetime,
    instance_hint: str = "",
    force: bool = False,
) -> CertInfo:
    """Enroll this node; returns what the installed certificate says.

    ``instance_hint`` (the discovered identity) goes into the CSR's CN; the
    platform decides the name from the token. Refuses to replace an existing
    enrollment unless ``force``.
    """
    parse_certificates(platform_ca_pem, "platform CA")
    if store.is_enrolled() and not force:
        info = store.info()
        who = info.instance_id if info else "?"
        raise ConfigError(
            f"{store.dir}: already enrolled as instance {who}; pass --force to enroll again "
            "(the current certificate is archived)"
        )
    key = generate_key()
    store.stage_key(key)
    reply = client.enroll(check_token(token, "enroll"), build_csr(key, instance_hint).decode())
    cert = parse_certificate(reply.certificate_pem, "enroll answer: certificate_pem")
    named = instance_id_of(cert)
    if named != reply.instance_id:
        raise VerificationError(
            f"enroll answer names instance {reply.instance_id} but its certificate names "
            f"{named or 'nothing'}; refusing it (nothing written)"
        )
    if instance_hint and instance_hint != named:
        # The token decides; a different discovered identity is worth a loud note.
        log.warning(
            "enrolled as instance %s, but identity discovery found %s", named, instance_hint
        )
    node_ca = reply.ca_pem.encode()
    if not parse_certificates(node_ca, "enroll answer: ca_pem"):
        raise DataError("enroll answer: ca_pem holds no certificate")
    info = store.install(
        reply.certificate_pem.encode(),
        key,
        now,
        node_ca_pem=node_ca,
        platform_ca_pem=platform_ca_pem,
    )
    log.info("enrolled as instance %s", info.instance_id)
    return info
