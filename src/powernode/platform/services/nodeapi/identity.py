"""Who is calling the node API: a verified client certificate that is not revoked.

The check runs on every node request, heartbeats included (≥ 1,000/s from one
process), so nothing here touches the database on the hot path:
``NodeCA.verify_peer`` caches parsed certificates by fingerprint, and revoked
serials live in :class:`RevocationSet`, loaded at start, updated at once by a
revocation made in this process and re-read from the database every
``refresh_seconds`` (other processes' revocations reach this one within that
time — the trade-off is documented in docs/node-api.md).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from powernode.platform.db import InstanceStatus, NodeCertificate, NodeInstance
from powernode.platform.pki import NodeCA, NodePeer
from powernode.platform.problems import AuthenticationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeApiPolicy:
    """Limits and timings of the node API (defaults: docs/node-api.md)."""

    visibility_timeout: timedelta = timedelta(seconds=300)
    retry_base: timedelta = timedelta(seconds=10)
    retry_cap: timedelta = timedelta(seconds=600)
    default_max_attempts: int = 3
    heartbeat_flush_seconds: float = 0.5
    revocation_refresh_seconds: float = 5.0
    max_events_per_call: int = 500
    max_lease: int = 100


class RevocationSet:
    """Serials of revoked node certificates, and instances that ended, kept in memory.

    An instance terminated (or failed) by the operator keeps no say: its
    certificates are refused like revoked ones, from the next refresh on.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._serials: frozenset[str] = frozenset()
        self._ended: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def load(self, engine: Engine) -> int:
        """Re-read every revoked serial and ended instance; returns the count of serials."""
        ended_states = (InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value)
        with Session(engine) as session:
            rows = session.scalars(
                select(NodeCertificate.serial).where(NodeCertificate.revoked_at.is_not(None))
            ).all()
            ended = session.scalars(
                select(NodeInstance.id).where(NodeInstance.status.in_(ended_states))
            ).all()
        serials = frozenset(rows)
        with self._lock:
            # A revocation is never undone, so a union: one this process added
            # after the SELECT began is not lost.
            self._serials = self._serials | serials
            self._ended = frozenset(ended)
        return len(self._serials)

    def ended(self, instance_id: str) -> bool:
        return instance_id in self._ended

    def add(self, serials: list[str]) -> None:
        with self._lock:
            self._serials = self._serials | frozenset(serials)

    def __contains__(self, serial: object) -> bool:
        return serial in self._serials


def authenticate(
    ca: NodeCA, revoked: RevocationSet, cert_der: bytes | None, now: datetime
) -> NodePeer:
    """The node behind ``cert_der``, or AuthenticationError (401) saying what to do."""
    if cert_der is None:
        raise AuthenticationError(
            "no client certificate: every node API call but enroll needs the certificate "
            "issued at enrollment (powernode-agent enroll --token-file FILE)"
        )
    peer = ca.verify_peer(cert_der, now=now)
    if peer.serial in revoked:
        log.info("refused revoked certificate %s of instance %s", peer.serial, peer.instance_id)
        raise AuthenticationError(
            f"certificate serial {peer.serial} of instance {peer.instance_id} was revoked by "
            "the operator; enroll again with a new bootstrap token "
            "(powernode system create-bootstrap-token INSTANCE)",
            serial=peer.serial,
        )
    if revoked.ended(peer.instance_id):
        raise AuthenticationError(
            f"instance {peer.instance_id} was terminated; its certificates are no longer "
            "accepted (a new instance enrolls with its own bootstrap token)"
        )
    return peer
