"""Certificate rotation at 75 % of the certificate's lifetime (seed 000).

"Cert issued not_before=t0 → t0 + 67.5d (75 % of 90d) → agent generates new
keypair, POST /node_api/certificates/rotate, get new cert → persist new
cert, archive old as cert.<timestamp>.pem". The request is authenticated
with the current certificate, so rotation must succeed before it expires:
"If rotation fails (platform unreachable for >22.5 days — the remaining 25 %
of cert lifetime), the agent emits system.cert.rotation_failed critical
events on every heartbeat". The runtime retries on every heartbeat and
emits that event on every heartbeat while the last attempt failed.

The policy is pure (:func:`rotation_due`, :func:`failure_payload`); the
procedure (:func:`rotate`) takes the store, the client and ``now``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from powernode.agent.certstore import CertInfo, CertStore, build_csr, generate_key, rfc3339
from powernode.agent.transport import NodeClient
from powernode.node.fields import JSON

log = logging.getLogger(__name__)

ROTATION_FAILED = "system.cert.rotation_failed"
ROTATED = "system.cert.rotated"


def rotation_due(info: CertInfo, now: datetime, fraction: float = 0.75) -> bool:
    """Whether ``now`` is at or past ``fraction`` of the certificate's lifetime."""
    lifetime = info.not_after - info.not_before
    return now >= info.not_before + lifetime * fraction


@dataclass(frozen=True)
class RotationState:
    """Where a certificate stands in its rotation, at one moment."""

    rotate_after: datetime  # ``fraction`` of the lifetime
    due: bool
    expired: bool
    seconds_left: int  # 0 once expired


def rotation_state(info: CertInfo, now: datetime, fraction: float = 0.75) -> RotationState:
    """The rotation state ``status`` and ``introspect`` show (the loop rotates by the same rule)."""
    lifetime = info.not_after - info.not_before
    return RotationState(
        rotate_after=info.not_before + lifetime * fraction,
        due=rotation_due(info, now, fraction),
        expired=now >= info.not_after,
        seconds_left=max(0, int((info.not_after - now).total_seconds())),
    )


@dataclass(frozen=True)
class RotationFailure:
    """The state after a failed attempt, kept until an attempt succeeds."""

    since: datetime  # first failure of this streak
    attempts: int
    error: str


def record_failure(previous: RotationFailure | None, now: datetime, error: str) -> RotationFailure:
    if previous is None:
        return RotationFailure(now, 1, error)
    return RotationFailure(previous.since, previous.attempts + 1, error)


def failure_payload(failure: RotationFailure, info: CertInfo, now: datetime) -> dict[str, JSON]:
    """The payload of a ``system.cert.rotation_failed`` event."""
    return {
        "instance_id": info.instance_id,
        "error": failure.error,
        "failed_since": rfc3339(failure.since),
        "attempts": failure.attempts,
        "cert_serial": f"{info.serial:x}",
        "not_after": rfc3339(info.not_after),
        "seconds_left": max(0, int((info.not_after - now).total_seconds())),
        "expired": now >= info.not_after,
        "action": (
            "make the platform reachable from this node; once the certificate has expired, "
            "re-enroll with 'powernode-agent enroll --force --token-file FILE' "
            "(FILE holding a new bootstrap token)"
        ),
    }


def rotate(store: CertStore, client: NodeClient, now: datetime) -> CertInfo:
    """Generate a new key, have the platform sign it, install it; the old cert is archived.

    Raises what the client raises (unreachable, refused) or what the store
    raises (a certificate that does not verify); the installed pair is then
    unchanged.
    """
    current = store.info()
    hint = current.instance_id if current else ""
    key = generate_key()
    store.stage_key(key)
    reply = client.rotate(build_csr(key, hint).decode())
    info = store.install(reply.certificate_pem.encode(), key, now)
    log.info(
        "rotated certificate: new serial %x valid until %s", info.serial, rfc3339(info.not_after)
    )
    return info
