"""Who is calling the node API: a verified client certificate that is the instance's live one.

An instance has **one live identity**, named on its row: ``cert_serial``,
the certificate it uses, and ``new_cert_serial``, the one its last rotation
issued and it has not presented yet (SPIRE keeps the same pair on its
attested-node record). Every node request reads that row — one primary-key
lookup — and is refused unless the certificate's serial is one of the two
and the instance has not ended. The first request with the new certificate
makes it current, and from then on the one before it is refused. This is a
fact every platform process reads at once, not a list a process refreshes:

- revocation (``enroll.revoke_instance``) sets both to NULL: every
  certificate of the instance stops working on the next request, in every
  process;
- re-enrollment sets ``cert_serial`` to the new certificate: the previous
  one stops working;
- rotation checks the caller's serial and sets ``new_cert_serial`` under
  the row's lock (``FOR UPDATE``; on SQLite the unit's ``BEGIN
  IMMEDIATE``), as revocation and enrollment do, so a rotation racing a
  revocation either commits first and is revoked with the rest, or finds
  the row revoked and is refused.

``NodeCA.verify_peer`` still caches parsed certificates by their DER, so the
cost per request is that lookup, shared by the requests waiting at the same
time (identity_batch.py; docs/node-api.md has the figures).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import anyio
from sqlalchemy import Engine, Select, Table, Update, bindparam, select, update

from powernode.platform.db import InstanceStatus, NodeCertificate, NodeInstance
from powernode.platform.db.session import writer
from powernode.platform.pki import NodeCA, NodePeer
from powernode.platform.problems import AuthenticationError

log = logging.getLogger(__name__)

_ENDED = frozenset({InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value})
_REENROLL = "enroll again with a new bootstrap token (powernode system create-bootstrap-token {})"


@dataclass(frozen=True)
class NodeApiPolicy:
    """Limits and timings of the node API (defaults: docs/node-api.md).

    ``rotate_min_interval``: a node rotates at most once per interval (zero:
    no limit). ``events_per_second`` and ``events_burst``: a token bucket per
    instance, one token per event (rate zero: no limit).
    """

    visibility_timeout: timedelta = timedelta(seconds=300)
    retry_base: timedelta = timedelta(seconds=10)
    retry_cap: timedelta = timedelta(seconds=600)
    default_max_attempts: int = 3
    heartbeat_flush_seconds: float = 0.5
    max_events_per_call: int = 500
    max_lease: int = 100
    rotate_min_interval: timedelta = timedelta(seconds=60)
    events_per_second: float = 100.0
    events_burst: float = 10_000.0


@dataclass(frozen=True)
class LiveIdentity:
    """What the instance row says about which certificates may speak for it."""

    status: str
    cert_serial: str | None
    new_cert_serial: str | None


def judge(
    peer: NodePeer, live: LiveIdentity | None, revoked_at: Callable[[str], datetime | None]
) -> bool:
    """Whether ``peer`` is the instance's pending new certificate; raises when it may not speak.

    Pure: ``live`` is the instance row (None: no such instance) and
    ``revoked_at(serial)`` says when a certificate was revoked (asked only
    to word a refusal).
    """
    iid = peer.instance_id
    if live is None:
        raise AuthenticationError(f"instance {iid} named by the certificate no longer exists")
    if live.status in _ENDED:
        raise AuthenticationError(
            f"instance {iid} was {live.status}; its certificates are no longer accepted (a new "
            "instance enrolls with its own bootstrap token)"
        )
    if peer.serial == live.cert_serial:
        return False
    if peer.serial == live.new_cert_serial:
        return True
    when = revoked_at(peer.serial)
    if when is not None or (live.cert_serial is None and live.new_cert_serial is None):
        at = f" at {when.isoformat()}" if when is not None else ""
        log.info("refused revoked certificate %s of instance %s", peer.serial, iid)
        raise AuthenticationError(
            f"certificate serial {peer.serial} of instance {iid} was revoked by the "
            f"operator{at}; {_REENROLL.format(iid)}",
            serial=peer.serial,
        )
    log.info("refused superseded certificate %s of instance %s", peer.serial, iid)
    raise AuthenticationError(
        f"certificate serial {peer.serial} of instance {iid} is no longer the instance's: a "
        "later enrollment or rotation replaced it (an instance has one live certificate); "
        f"use the newest certificate, or {_REENROLL.format(iid)}",
        serial=peer.serial,
    )


@functools.cache
def _identity_read() -> Select[Any]:  # Any: the rows of a select, typed by SQLAlchemy
    t = cast(Table, NodeInstance.__table__)
    return select(t.c.status, t.c.cert_serial, t.c.new_cert_serial).where(t.c.id == bindparam("id"))


@functools.cache
def _revoked_read() -> Select[Any]:  # Any: the rows of a select, typed by SQLAlchemy
    t = cast(Table, NodeCertificate.__table__)
    return select(t.c.revoked_at).where(t.c.serial == bindparam("serial"))


@functools.cache
def _make_current() -> Update:
    t = cast(Table, NodeInstance.__table__)
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.new_cert_serial == bindparam("b_serial"))
        .values(cert_serial=bindparam("b_serial"), new_cert_serial=None)
    )


def live_identity(engine: Engine, instance_id: str) -> LiveIdentity | None:
    with engine.connect() as conn:
        row = conn.execute(_identity_read(), {"id": instance_id}).first()
    return None if row is None else LiveIdentity(row.status, row.cert_serial, row.new_cert_serial)


def revoked_at(engine: Engine, serial: str) -> datetime | None:
    with engine.connect() as conn:
        value: datetime | None = conn.execute(_revoked_read(), {"serial": serial}).scalar()
    return value


async def authenticate(
    ca: NodeCA,
    live_of: Callable[[str], Awaitable[LiveIdentity | None]],
    engine: Engine,
    cert_der: bytes | None,
    now: datetime,
) -> NodePeer:
    """The node behind ``cert_der``, or AuthenticationError (401) saying what to do.

    ``live_of`` reads an instance's live identity (``LiveIdentityReader.get``,
    batched); the rare rest — wording a refusal, making a rotated certificate
    current — runs in a worker thread on ``engine``.
    """
    if cert_der is None:
        raise AuthenticationError(
            "no client certificate: every node API call but enroll needs the certificate "
            "issued at enrollment (powernode-agent enroll --token-file FILE)"
        )
    peer = ca.verify_peer(cert_der, now=now)
    live = await live_of(peer.instance_id)
    if live is not None and live.status not in _ENDED and peer.serial == live.cert_serial:
        return peer  # the common case, decided without another read
    return await anyio.to_thread.run_sync(settle, engine, peer, live)


def settle(engine: Engine, peer: NodePeer, live: LiveIdentity | None) -> NodePeer:
    """``peer`` if it may speak (making a staged certificate current), else raise (blocking)."""
    if not judge(peer, live, lambda s: revoked_at(engine, s)):
        return peer
    # The first use of the certificate the last rotation issued: it becomes the
    # current one, the one before it is refused from now on. Conditional, so a
    # revocation or another rotation committed meanwhile wins.
    with writer(engine).begin() as conn:
        made = conn.execute(_make_current(), {"b_id": peer.instance_id, "b_serial": peer.serial})
        if made.rowcount == 1:
            log.info("instance %s now uses certificate %s", peer.instance_id, peer.serial)
            return peer
    judge(peer, live_identity(engine, peer.instance_id), lambda s: revoked_at(engine, s))
    return peer  # made current by a concurrent request of the same node
