"""Bootstrap tokens, enrollment, certificate rotation and revocation.

Enrollment is one transaction: the token is looked up by its SHA-256,
checked (known, not used, not expired, its instance alive), the certificate
issued, recorded, and the token consumed with ``UPDATE … WHERE used_at IS
NULL``; if that UPDATE finds the token already used (a concurrent enroll won)
the transaction rolls back and nothing issued is recorded. A refused enroll
changes no row.

Enroll, rotate and revoke each lock the instance row first (``FOR UPDATE``;
on SQLite the unit's ``BEGIN IMMEDIATE`` serialises them anyway) and change
its live identity (``cert_serial``/``new_cert_serial``, identity.py) in the
same transaction: enrollment makes its certificate the only live one,
rotation stages the new one next to the caller's, revocation clears both.
So a rotation racing a revocation cannot outlive it: if it commits first,
the revocation clears what it staged; if the revocation commits first, the
rotation finds the caller's certificate no longer live and is refused.

The CSR's CN is only a hint (the agent puts its discovered identity there);
when it is an instance UUID it must be the token's instance: a token stolen
for instance B does not turn node A into B.
"""

from __future__ import annotations

import logging
import math
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from powernode.platform.db import (
    BootstrapToken,
    FleetEvent,
    InstanceStatus,
    NodeCertificate,
    NodeInstance,
)
from powernode.platform.pki import IssuedCertificate, NodeCA, NodePeer
from powernode.platform.problems import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    PlatformError,
    RateLimitedError,
)
from powernode.platform.services import audit
from powernode.platform.services.context import WRITE, Ctx
from powernode.platform.services.nodeapi import identity
from powernode.platform.services.nodes import get_instance
from powernode.platform.services.tokens import hash_secret

log = logging.getLogger(__name__)

BOOTSTRAP_PREFIX = "pnb_"
MAX_TOKEN_TTL = timedelta(days=30)
_ENDED = frozenset({InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value})
_CREATE_HINT = "create a new one: powernode system create-bootstrap-token {instance}"


def create_bootstrap_token(
    ctx: Ctx, instance_id: str, ttl: timedelta
) -> tuple[BootstrapToken, str]:
    """A single-use token for ``instance_id``; the secret is returned once, stored hashed."""
    ctx.actor.require(WRITE, "creating a bootstrap token")
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise InvalidInputError(
            f"ttl of {ttl.total_seconds():.0f} s: use 1 s to {MAX_TOKEN_TTL.days} days",
            field="ttl_seconds",
        )
    instance = get_instance(ctx, instance_id)
    _require_alive(instance, "a bootstrap token")
    secret = BOOTSTRAP_PREFIX + secrets.token_urlsafe(32)
    token = BootstrapToken(
        instance_id=instance.id,
        token_hash=hash_secret(secret),
        created_by=ctx.actor.name,
        created_at=ctx.now,
        expires_at=ctx.now + ttl,
    )
    ctx.session.add(token)
    ctx.session.flush()
    audit.record(
        ctx,
        action="instance.bootstrap_token",
        target_type="node_instance",
        target_id=instance.id,
        summary=f"created a bootstrap token for instance {instance.id} ({instance.hostname})",
        detail={"token_id": token.id, "expires_at": token.expires_at.isoformat()},
    )
    return token, secret


def _require_alive(instance: NodeInstance, what: str) -> None:
    if instance.status in _ENDED:
        raise ConflictError(
            f"instance {instance.id} is {instance.status}: no {what} for it; provision a "
            "new instance (powernode system provision-instance NODE)",
            instance_id=instance.id,
        )


def _csr_hint(csr_pem: str) -> str | None:
    """The instance UUID a CSR's CN names, if it names one (unparseable: the CA refuses it)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if not names:
        return None
    try:
        return str(uuid.UUID(str(names[0].value)))
    except ValueError:
        return None


def enroll(
    session: Session,
    ca: NodeCA,
    token_secret: str,
    csr_pem: str,
    *,
    now: datetime,
    lifetime: timedelta,
    claimed_instance: str | None = None,
) -> tuple[NodeInstance, IssuedCertificate]:
    """Exchange a bootstrap token and a CSR for a certificate; the caller commits."""
    token = session.scalar(
        select(BootstrapToken).where(BootstrapToken.token_hash == hash_secret(token_secret))
    )
    if token is None:
        raise AuthenticationError(
            "bootstrap token unknown: pass it exactly as printed when it was created, or "
            "create a new one: powernode system create-bootstrap-token INSTANCE"
        )
    hint = _CREATE_HINT.format(instance=token.instance_id)
    if token.used_at is not None:
        raise AuthenticationError(
            f"bootstrap token already used at {token.used_at.isoformat()} (tokens are "
            f"single use); {hint}",
            instance_id=token.instance_id,
        )
    if token.expires_at <= now:
        raise AuthenticationError(
            f"bootstrap token expired at {token.expires_at.isoformat()}; {hint}",
            instance_id=token.instance_id,
        )
    for named, where in ((claimed_instance, "the request"), (_csr_hint(csr_pem), "the CSR's CN")):
        if named is not None and named != token.instance_id:
            raise PermissionDeniedError(
                f"{where} names instance {named}, but this bootstrap token is for instance "
                f"{token.instance_id}; use a token created for {named}",
                instance_id=token.instance_id,
            )
    instance = session.get(NodeInstance, token.instance_id, with_for_update=True)
    if instance is None:  # CASCADE removes tokens with their instance; be safe anyway
        raise AuthenticationError(f"bootstrap token's instance {token.instance_id} is gone")
    _require_alive(instance, "enrollment")
    issued = ca.issue(csr_pem, instance.id, now=now, lifetime=lifetime)
    consumed = session.execute(
        update(BootstrapToken)
        .where(BootstrapToken.id == token.id, BootstrapToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if consumed.rowcount != 1:  # type: ignore[attr-defined]
        raise AuthenticationError(f"bootstrap token was used by a concurrent enrollment; {hint}")
    first = session.scalar(
        select(NodeCertificate.id).where(NodeCertificate.instance_id == instance.id).limit(1)
    )
    _record(session, instance.id, issued, "enroll", now)
    # One live identity: every certificate the instance held before stops working.
    instance.cert_serial = issued.serial
    instance.new_cert_serial = None
    if instance.status in (InstanceStatus.PENDING.value, InstanceStatus.PROVISIONING.value):
        instance.status = InstanceStatus.RUNNING.value
    session.add(
        FleetEvent(
            kind="instance.enrolled" if first is None else "instance.reenrolled",
            node_id=instance.node_id,
            instance_id=instance.id,
            payload={"serial": issued.serial, "not_after": issued.not_after.isoformat()},
            occurred_at=now,
        )
    )
    log.info("instance %s enrolled (certificate %s)", instance.id, issued.serial)
    return instance, issued


def record_refusal(
    session: Session,
    error: PlatformError,
    claimed_instance: str | None,
    csr_pem: str,
    *,
    now: datetime,
) -> str | None:
    """A fleet event ``instance.enroll_refused`` for a refused enroll (its own transaction).

    On the instance the token is for, else on the one the request claims, when it
    exists; the reason is the refusal's detail (it never holds the token). Returns the
    instance the event was recorded on.
    """
    named = error.extra.get("instance_id")
    claimed_instance = claimed_instance or _csr_hint(csr_pem)
    for candidate in (named, claimed_instance):
        if not isinstance(candidate, str):
            continue
        instance = session.get(NodeInstance, candidate)
        if instance is None:
            continue
        session.add(
            FleetEvent(
                kind="instance.enroll_refused",
                node_id=instance.node_id,
                instance_id=instance.id,
                payload={
                    "reason": error.detail,
                    "problem": error.slug,
                    "claimed_instance": claimed_instance,
                    "token_instance": named if isinstance(named, str) else None,
                },
                occurred_at=now,
            )
        )
        log.info("instance %s: enrollment refused: %s", instance.id, error.detail)
        return str(instance.id)
    return None


def _record(
    session: Session, instance_id: str, issued: IssuedCertificate, reason: str, now: datetime
) -> None:
    session.add(
        NodeCertificate(
            instance_id=instance_id,
            serial=issued.serial,
            fingerprint=issued.fingerprint_sha256,
            issued_at=now,
            not_after=issued.not_after,
            reason=reason,
        )
    )


def rotate(
    session: Session,
    ca: NodeCA,
    peer: NodePeer,
    csr_pem: str,
    *,
    now: datetime,
    lifetime: timedelta,
    min_interval: timedelta = timedelta(0),
) -> IssuedCertificate:
    """A new certificate for the caller's instance, live once the node first uses it.

    Under the instance row's lock: the caller's certificate must still be
    live (a revocation that committed first wins), the last rotation at
    least ``min_interval`` ago (else 429). Until the node presents the new
    certificate, the caller's keeps working (the answer may be lost on the
    way); a later rotation replaces a new certificate never used.
    """
    hint = _csr_hint(csr_pem)
    if hint is not None and hint != peer.instance_id:
        raise PermissionDeniedError(
            f"the CSR's CN names instance {hint}, but the caller's certificate is for "
            f"{peer.instance_id}; a node renews only its own certificate"
        )
    instance = session.get(NodeInstance, peer.instance_id, with_for_update=True)
    live = None if instance is None else _live(instance)
    identity.judge(peer, live, lambda serial: _revoked_at(session, serial))
    assert instance is not None  # judge refuses a missing instance
    _require_alive(instance, "certificate rotation")
    last = instance.cert_rotated_at
    if last is not None and now < last + min_interval:
        wait = max(1, math.ceil((last + min_interval - now).total_seconds()))
        raise RateLimitedError(
            f"instance {instance.id} rotated its certificate at {last.isoformat()}; one "
            f"rotation per {min_interval.total_seconds():g} s (node_rotate_min_interval_seconds)"
            f": keep the current certificate and retry after {wait} s",
            retry_after=wait,
        )
    issued = ca.issue(csr_pem, instance.id, now=now, lifetime=lifetime)
    _record(session, instance.id, issued, "rotate", now)
    instance.cert_serial = peer.serial  # rotating with the staged one makes it current
    instance.new_cert_serial = issued.serial
    instance.cert_rotated_at = now
    session.add(
        FleetEvent(
            kind="instance.certificate_rotated",
            node_id=instance.node_id,
            instance_id=instance.id,
            payload={"serial": issued.serial, "previous_serial": peer.serial},
            occurred_at=now,
        )
    )
    return issued


def _live(instance: NodeInstance) -> identity.LiveIdentity:
    return identity.LiveIdentity(instance.status, instance.cert_serial, instance.new_cert_serial)


def _revoked_at(session: Session, serial: str) -> datetime | None:
    found: datetime | None = session.scalar(
        select(NodeCertificate.revoked_at).where(NodeCertificate.serial == serial)
    )
    return found


def revoke_instance(ctx: Ctx, instance_id: str) -> list[str]:
    """Revoke every certificate of the instance; the serials revoked.

    The instance keeps no live certificate (refused on the next request, by
    every process) until it enrolls again with a new bootstrap token.
    """
    ctx.actor.require(WRITE, "revoking an instance's certificates")
    instance = get_instance(ctx, instance_id)
    # The row lock orders this against a rotation or enrollment in flight: it
    # either committed (and its certificate is revoked below) or waits and
    # then finds no live certificate.
    ctx.session.refresh(instance, with_for_update=True)
    instance.cert_serial = None
    instance.new_cert_serial = None
    certs = ctx.session.scalars(
        select(NodeCertificate).where(
            NodeCertificate.instance_id == instance.id, NodeCertificate.revoked_at.is_(None)
        )
    ).all()
    for cert in certs:
        cert.revoked_at = ctx.now
    serials = sorted(c.serial for c in certs)
    ctx.session.add(
        FleetEvent(
            kind="instance.certificates_revoked",
            severity="warning",
            node_id=instance.node_id,
            instance_id=instance.id,
            payload={"serials": serials},
            occurred_at=ctx.now,
        )
    )
    audit.record(
        ctx,
        action="instance.revoke_certificates",
        target_type="node_instance",
        target_id=instance.id,
        summary=f"revoked {len(serials)} certificate(s) of instance {instance.id}",
        detail={"serials": serials},
    )
    return serials


def live_serials(ctx: Ctx, instance_id: str) -> dict[str, Literal["current", "staged"]]:
    """The serials that may speak for the instance now: its current and staged certificate."""
    instance = get_instance(ctx, instance_id)
    if instance.status in _ENDED:
        return {}
    live: dict[str, Literal["current", "staged"]] = {}
    if instance.cert_serial is not None:
        live[instance.cert_serial] = "current"
    if instance.new_cert_serial is not None:
        live[instance.new_cert_serial] = "staged"
    return live


def list_certificates(ctx: Ctx, instance_id: str) -> list[NodeCertificate]:
    instance = get_instance(ctx, instance_id)
    q = select(NodeCertificate).where(NodeCertificate.instance_id == instance.id)
    return list(ctx.session.scalars(q.order_by(NodeCertificate.issued_at, NodeCertificate.id)))
