"""Build-completion webhooks from Gitea and GitHub: authenticate, de-duplicate, queue.

Seed 004: the module repo's CI posts to ``/api/v1/system/webhooks/gitea/module``
signed with the module's ``webhook_secret`` (``POWERNODE_WEBHOOK_SECRET``).
Checked in this order, each failure a 4xx that changes nothing:

1. size (at most :data:`MAX_BODY` bytes) and a JSON object body;
2. the module: ``module`` (name) in the body, else ``repository.full_name``
   matched against the module's ``gitea_repo_full_name`` /
   ``github_repo_full_name`` (:func:`parse_sender`; nothing else of the body
   is read before the signature verifies);
3. the signature: HMAC-SHA256 of the raw body under the webhook secret,
   ``X-Gitea-Signature: <hex>`` (Gitea) or ``X-Hub-Signature-256:
   sha256=<hex>`` (GitHub's docs, "Validating webhook deliveries"), compared
   in constant time (``hmac.compare_digest``). No module and a module whose
   secret does not verify are the same 401: without a secret, module names
   cannot be probed;
4. freshness: a top-level ``timestamp`` (Unix seconds or RFC 3339), when the
   sender includes one, must be within :data:`WINDOW` of the platform clock;
5. replay: a delivery is stored under two unique keys, the delivery id
   (``X-Gitea-Delivery`` / ``X-GitHub-Delivery``) and the SHA-256 of the
   signed body per module. The HMAC covers the body only, and native
   payloads carry no timestamp, so the body is what identifies a delivery:
   the same body under a new id (or on the other provider's endpoint) is a
   replay, refused (409) with nothing changed;
6. the tag: ``tag``, ``ref`` (``refs/tags/<tag>``) or ``release.tag_name``.
   A push of a branch is acknowledged and ignored.

Steps 1-4 (:func:`authenticate`) only read; step 5 (:func:`record`) begins
its own transaction with the insert that claims the delivery, so two
identical deliveries at once make one row and one ingest on SQLite and
PostgreSQL alike. The pure parts (:func:`check_signature`,
:func:`parse_payload`) take bytes and values and raise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NoReturn

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from powernode.errors import VerificationError
from powernode.platform.db import ModuleIngest, NodeModule, WebhookDelivery
from powernode.platform.db.base import new_id
from powernode.platform.problems import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    PayloadTooLargeError,
)
from powernode.platform.sealing import Sealer
from powernode.platform.services import ingest
from powernode.platform.services.context import Ctx

log = logging.getLogger(__name__)

Provider = Literal["gitea", "github"]
MAX_BODY = 256 * 1024  # a push event with many commits stays well below this
WINDOW = timedelta(minutes=5)
MAX_CANDIDATES = 16  # modules sharing one repo name across accounts
_DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class ReplayError(ConflictError):
    slug = "webhook-replayed"
    title = "Webhook delivery replayed"


@dataclass(frozen=True)
class Payload:
    module: str | None
    repository: str | None
    account: str | None
    event: str
    ref: str  # as sent: refs/tags/v1.0.0, refs/heads/main, v1.0.0
    tag: str | None  # None: not a tag (a branch push): acknowledged, ignored
    timestamp: datetime | None


@dataclass(frozen=True)
class Outcome:
    delivery: WebhookDelivery
    module: NodeModule
    ingest: ModuleIngest | None
    ignored: str | None


def signature_of(provider: Provider, headers: Mapping[str, str]) -> bytes:
    """The HMAC the sender claims, from its provider's header; AuthenticationError."""
    name = "X-Gitea-Signature" if provider == "gitea" else "X-Hub-Signature-256"
    raw = headers.get(name.lower())
    if raw is None:
        raise AuthenticationError(
            f"missing {name} header: sign the body with HMAC-SHA256 under the module's "
            "webhook secret (POWERNODE_WEBHOOK_SECRET)"
        )
    value = raw.strip()
    if provider == "github":
        if not value.startswith("sha256="):
            raise AuthenticationError(f"{name} must be 'sha256=<hex>', got {value[:20]!r}")
        value = value[len("sha256=") :]
    if not _HEX.match(value):
        raise AuthenticationError(f"{name} is not 64 hex digits (an HMAC-SHA256)")
    return bytes.fromhex(value)


def check_signature(body: bytes, secret: str, claimed: bytes) -> bool:
    """True when ``claimed`` is HMAC-SHA256(secret, body); constant time."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(mac, claimed)


def sign(body: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 a sender puts in X-Gitea-Signature (for CI scripts and tests)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _text(data: Mapping[str, object], *path: str) -> str | None:
    value: object = data
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise InvalidInputError(f"{'.'.join(path)} must be a string of at most 255 characters")
    return value


def _timestamp(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool):
        value = str(value)
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if ts.tzinfo is None:
                raise ValueError("no time zone")
            return ts.astimezone(UTC)
    except (ValueError, OverflowError, OSError) as e:
        raise InvalidInputError(
            f"timestamp {str(value)[:40]!r}: use Unix seconds or RFC 3339 with a zone ({e})",
            field="timestamp",
        ) from e
    raise InvalidInputError("timestamp must be a number or a string", field="timestamp")


@dataclass(frozen=True)
class Sender:
    """Who a body says it is for: read before the signature, to find the secret."""

    data: Mapping[str, object]
    module: str | None
    repository: str | None
    account: str | None


def parse_sender(body: bytes) -> Sender:
    """Size, a JSON object, and the module it names (``module`` or
    ``repository.full_name``); the only body checks made before the signature."""
    if len(body) > MAX_BODY:
        raise PayloadTooLargeError(
            f"webhook body is {len(body)} bytes; the limit is {MAX_BODY}", max_body_bytes=MAX_BODY
        )
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"webhook body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise InvalidInputError("webhook body must be a JSON object")
    sender = Sender(
        data=data,
        module=_text(data, "module"),
        repository=_text(data, "repository", "full_name"),
        account=_text(data, "account"),
    )
    if sender.module is None and sender.repository is None:
        raise InvalidInputError(
            "the webhook names no module: send 'module' or repository.full_name", field="module"
        )
    return sender


def parse_payload(sender: Sender, event: str) -> Payload:
    """The tag and timestamp of a body whose signature verified."""
    data = sender.data
    ref = _text(data, "tag") or _text(data, "ref") or _text(data, "release", "tag_name") or ""
    if ref.startswith("refs/tags/"):
        tag: str | None = ref[len("refs/tags/") :]
    elif ref.startswith("refs/"):
        tag = None
    else:
        tag = ref or None
    if tag is None and not ref:
        raise InvalidInputError(
            "the webhook names no tag: send 'tag', 'ref' (refs/tags/<tag>) or release.tag_name",
            field="ref",
        )
    return Payload(
        module=sender.module,
        repository=sender.repository,
        account=sender.account,
        event=event[:64],
        ref=ref,
        tag=tag,
        timestamp=_timestamp(data.get("timestamp")),
    )


def _candidates(ctx: Ctx, provider: Provider, p: Sender) -> list[NodeModule]:
    """The modules the body may mean; empty when none is registered."""
    q = select(NodeModule)
    if p.module is not None:
        q = q.where(NodeModule.name == p.module)
    else:
        column = (
            NodeModule.gitea_repo_full_name
            if provider == "gitea"
            else NodeModule.github_repo_full_name
        )
        repository = p.repository or ""
        q = q.where(or_(column == repository, column == repository.lower()))
    if p.account is not None:
        q = q.where(NodeModule.account == p.account)
    return list(ctx.session.scalars(q.order_by(NodeModule.id).limit(MAX_CANDIDATES)))


def _signed_by(module: NodeModule, sealer: Sealer, body: bytes, claimed: bytes) -> bool:
    try:
        secret = sealer.open(module.webhook_secret_sealed, module.id)
    except VerificationError as e:  # the platform key changed: an operator must know
        log.error("webhook secret of module %s cannot be opened: %s", module.name, e)
        return False
    return check_signature(body, secret, claimed)


@dataclass(frozen=True)
class Signed:
    """A delivery whose body verified under ``module_id``'s webhook secret."""

    provider: Provider
    delivery_id: str
    module_id: str
    module_name: str
    body_sha256: str
    payload: Payload


def authenticate(
    ctx: Ctx,
    sealer: Sealer,
    provider: Provider,
    body: bytes,
    headers: Mapping[str, str],
) -> Signed:
    """Steps 1-4: who signed ``body``, or a PlatformError; reads only.

    ``headers`` are lower-cased names. An unknown module and a known one
    whose secret does not verify get the same 401 (the same detail), so a
    caller without a secret learns nothing about which modules exist.
    """
    claimed = signature_of(provider, headers)
    delivery_header = "X-Gitea-Delivery" if provider == "gitea" else "X-GitHub-Delivery"
    delivery_id = headers.get(delivery_header.lower(), "").strip()
    if not _DELIVERY.match(delivery_id):
        raise InvalidInputError(
            f"missing or malformed {delivery_header} header: a unique delivery id "
            "(1-128 letters, digits, '.', '_', ':' or '-') is required to refuse replays"
        )
    sender = parse_sender(body)
    candidates = _candidates(ctx, provider, sender)
    module = next((m for m in candidates if _signed_by(m, sealer, body, claimed)), None)
    if module is None:
        if not candidates:  # an HMAC all the same: no faster answer for unknown names
            check_signature(body, "no-such-module", claimed)
        raise AuthenticationError(_BAD_SIGNATURE)
    # The rest of the body is read only once its signature verified.
    event_header = "x-gitea-event" if provider == "gitea" else "x-github-event"
    p = parse_payload(sender, headers.get(event_header, "push"))
    if p.timestamp is not None and abs(ctx.now - p.timestamp) > WINDOW:
        raise AuthenticationError(
            f"webhook timestamp {p.timestamp.isoformat()} is more than "
            f"{int(WINDOW.total_seconds())} s from the platform's clock "
            f"({ctx.now.isoformat()}): a stale or replayed delivery, or a skewed clock"
        )
    return Signed(
        provider=provider,
        delivery_id=delivery_id,
        module_id=module.id,
        module_name=module.name,
        body_sha256=hashlib.sha256(body).hexdigest(),
        payload=p,
    )


_BAD_SIGNATURE = (
    "webhook signature does not match, or the webhook names no module registered here: "
    "sign the raw body with HMAC-SHA256 under the module's webhook_secret (shown once at "
    "create-module; POWERNODE_WEBHOOK_SECRET) and name the module by 'module' or "
    "repository.full_name"
)


def _claim(ctx: Ctx, d: Signed) -> bool:
    """Insert the delivery row unless either unique key exists; True when inserted.

    ``INSERT … ON CONFLICT DO NOTHING`` is the compare-and-set: of two
    concurrent identical deliveries the database lets one insert. It is the
    transaction's first statement, so SQLite takes its write lock here (a
    read first would make the later write fail with SQLITE_BUSY_SNAPSHOT
    when another writer committed in between) and PostgreSQL waits on the
    unique index for the other inserter's commit.
    """
    values = {
        "id": new_id(),
        "provider": d.provider,
        "delivery_id": d.delivery_id,
        "module_id": d.module_id,
        "body_sha256": d.body_sha256,
        "event": d.payload.event,
        "ref": d.payload.ref[:255],
        "received_at": ctx.now,
    }
    dialect = ctx.session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(WebhookDelivery).values(values).on_conflict_do_nothing()
    inserted = ctx.session.execute(stmt.returning(WebhookDelivery.id)).first()
    return inserted is not None


def _refuse_replay(ctx: Ctx, d: Signed) -> NoReturn:
    seen = ctx.session.scalar(
        select(WebhookDelivery)
        .where(
            or_(
                and_(
                    WebhookDelivery.provider == d.provider,
                    WebhookDelivery.delivery_id == d.delivery_id,
                ),
                and_(
                    WebhookDelivery.module_id == d.module_id,
                    WebhookDelivery.body_sha256 == d.body_sha256,
                ),
            )
        )
        .limit(1)
    )
    if seen is None:  # the other row was rolled back since: still not this one's turn
        why = f"{d.provider} delivery {d.delivery_id} collided with a concurrent one"
    elif seen.body_sha256 == d.body_sha256:
        why = (
            f"this signed body was received already ({seen.provider} delivery "
            f"{seen.delivery_id} at {seen.received_at.isoformat()})"
        )
    else:
        why = (
            f"{d.provider} delivery {d.delivery_id} was received already at "
            f"{seen.received_at.isoformat()}"
        )
    raise ReplayError(
        f"{why}; replays are refused whatever their delivery id (to ingest a tag again: "
        "powernode system ingest-module-version)",
        delivery_id=d.delivery_id,
    )


def record(ctx: Ctx, d: Signed) -> Outcome:
    """Steps 5-6 for an authenticated delivery: store it once, queue its tag.

    Run in a transaction of its own (after :func:`authenticate`'s): a replay
    (same delivery id, or the same body under any id) is a ReplayError and
    changes nothing, so a rejected tag is not queued again by its old body.
    """
    if not _claim(ctx, d):
        _refuse_replay(ctx, d)
    delivery = ctx.session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.provider == d.provider, WebhookDelivery.delivery_id == d.delivery_id
        )
    ).one()
    module = ctx.session.get(NodeModule, d.module_id)
    if module is None:  # deleted since authenticate: the FK set the row's module to NULL
        raise AuthenticationError(_BAD_SIGNATURE)
    if d.payload.tag is None:
        log.info(
            "%s delivery %s for %s: %s is not a tag",
            d.provider,
            d.delivery_id,
            module.name,
            d.payload.ref,
        )
        return Outcome(delivery, module, None, f"{d.payload.ref} is not a tag; nothing to ingest")
    # The webhook acts for the module's account, as its CI.
    wctx = Ctx(ctx.session, ingest.worker_actor(module.account, f"webhook:{d.provider}"), ctx.now)
    job = ingest.queue_ingest(wctx, module, d.payload.tag, f"webhook:{d.provider}")
    return Outcome(delivery, module, job, None)
