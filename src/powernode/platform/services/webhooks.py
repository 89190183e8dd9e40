"""Build-completion webhooks from Gitea and GitHub: authenticate, de-duplicate, queue.

Seed 004: the module repo's CI posts to ``/api/v1/system/webhooks/gitea/module``
signed with the module's ``webhook_secret`` (``POWERNODE_WEBHOOK_SECRET``).
Checked in this order, each failure a 4xx that changes nothing:

1. size (at most :data:`MAX_BODY` bytes) and a JSON object body;
2. the module: ``module`` (name) in the body, else ``repository.full_name``
   matched against the module's ``gitea_repo_full_name`` /
   ``github_repo_full_name``;
3. the signature: HMAC-SHA256 of the raw body under the webhook secret,
   ``X-Gitea-Signature: <hex>`` (Gitea) or ``X-Hub-Signature-256:
   sha256=<hex>`` (GitHub's docs, "Validating webhook deliveries"), compared
   in constant time (``hmac.compare_digest``);
4. freshness: a top-level ``timestamp`` (Unix seconds or RFC 3339), when the
   sender includes one, must be within :data:`WINDOW` of the platform clock;
5. replay: the delivery id (``X-Gitea-Delivery`` / ``X-GitHub-Delivery``) is
   stored under a unique constraint, so a second delivery with it is refused;
6. the tag: ``tag``, ``ref`` (``refs/tags/<tag>``) or ``release.tag_name``.
   A push of a branch is acknowledged and ignored.

The signature is checked before anything about the delivery is stored; the
pure parts (:func:`check_signature`, :func:`parse_payload`) take bytes and
values and raise.
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
from typing import Any, Literal

from sqlalchemy import or_, select

from powernode.errors import VerificationError
from powernode.platform.db import ModuleIngest, NodeModule, WebhookDelivery
from powernode.platform.problems import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
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


def _text(data: Mapping[str, Any], *path: str) -> str | None:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise InvalidInputError(f"{'.'.join(path)} must be a string of at most 255 characters")
    return value


def _timestamp(value: Any) -> datetime | None:
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


def parse_payload(body: bytes, event: str) -> Payload:
    """The fields ingest needs from a Gitea/GitHub event or a CI's own JSON."""
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
        module=_text(data, "module"),
        repository=_text(data, "repository", "full_name"),
        account=_text(data, "account"),
        event=event[:64],
        ref=ref,
        tag=tag,
        timestamp=_timestamp(data.get("timestamp")),
    )


def _candidates(ctx: Ctx, provider: Provider, p: Payload) -> list[NodeModule]:
    q = select(NodeModule)
    if p.module is not None:
        q = q.where(NodeModule.name == p.module)
    elif p.repository is not None:
        column = (
            NodeModule.gitea_repo_full_name
            if provider == "gitea"
            else NodeModule.github_repo_full_name
        )
        q = q.where(or_(column == p.repository, column == p.repository.lower()))
    else:
        raise InvalidInputError(
            "the webhook names no module: send 'module' or repository.full_name", field="module"
        )
    if p.account is not None:
        q = q.where(NodeModule.account == p.account)
    found = list(ctx.session.scalars(q.order_by(NodeModule.id).limit(MAX_CANDIDATES)))
    if not found:
        what = f"module {p.module!r}" if p.module else f"{provider} repository {p.repository!r}"
        raise NotFoundError(
            f"no module is registered for {what}; create it with "
            "powernode system create-module (--gitea-repo / --github-repo)"
        )
    return found


def _signed_by(module: NodeModule, sealer: Sealer, body: bytes, claimed: bytes) -> bool:
    try:
        secret = sealer.open(module.webhook_secret_sealed, module.id)
    except VerificationError as e:  # the platform key changed: an operator must know
        log.error("webhook secret of module %s cannot be opened: %s", module.name, e)
        return False
    return check_signature(body, secret, claimed)


def receive(
    ctx: Ctx,
    sealer: Sealer,
    provider: Provider,
    body: bytes,
    headers: Mapping[str, str],
) -> Outcome:
    """Authenticate one delivery and queue its tag; raises a PlatformError otherwise.

    ``headers`` are lower-cased names. ``ctx.actor`` is replaced per module
    (the webhook acts for the module's account).
    """
    claimed = signature_of(provider, headers)
    delivery_header = "X-Gitea-Delivery" if provider == "gitea" else "X-GitHub-Delivery"
    delivery_id = headers.get(delivery_header.lower(), "").strip()
    if not _DELIVERY.match(delivery_id):
        raise InvalidInputError(
            f"missing or malformed {delivery_header} header: a unique delivery id "
            "(1-128 letters, digits, '.', '_', ':' or '-') is required to refuse replays"
        )
    event_header = "x-gitea-event" if provider == "gitea" else "x-github-event"
    p = parse_payload(body, headers.get(event_header, "push"))
    module = next(
        (m for m in _candidates(ctx, provider, p) if _signed_by(m, sealer, body, claimed)),
        None,
    )
    if module is None:
        raise AuthenticationError(
            "webhook signature does not match: sign the raw body with HMAC-SHA256 under the "
            "module's webhook_secret (shown once at create-module; POWERNODE_WEBHOOK_SECRET)"
        )
    if p.timestamp is not None and abs(ctx.now - p.timestamp) > WINDOW:
        raise AuthenticationError(
            f"webhook timestamp {p.timestamp.isoformat()} is more than "
            f"{int(WINDOW.total_seconds())} s from the platform's clock "
            f"({ctx.now.isoformat()}): a stale or replayed delivery, or a skewed clock"
        )
    seen = ctx.session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.provider == provider, WebhookDelivery.delivery_id == delivery_id
        )
    )
    if seen is not None:
        raise ReplayError(
            f"{provider} delivery {delivery_id} was received already at "
            f"{seen.received_at.isoformat()}; replays are refused (redeliver with a new id)",
            delivery_id=delivery_id,
        )
    delivery = WebhookDelivery(
        provider=provider,
        delivery_id=delivery_id,
        module_id=module.id,
        event=p.event,
        ref=p.ref[:255],
        received_at=ctx.now,
    )
    ctx.session.add(delivery)
    # The webhook acts for the module's account, as its CI.
    wctx = Ctx(ctx.session, ingest.worker_actor(module.account, f"webhook:{provider}"), ctx.now)
    if p.tag is None:
        ctx.session.flush()
        log.info(
            "%s delivery %s for %s: %s is not a tag", provider, delivery_id, module.name, p.ref
        )
        return Outcome(delivery, module, None, f"{p.ref} is not a tag; nothing to ingest")
    job = ingest.queue_ingest(wctx, module, p.tag, f"webhook:{provider}")
    return Outcome(delivery, module, job, None)
