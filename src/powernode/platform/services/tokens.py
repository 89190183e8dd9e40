"""Operator API tokens: created once (secret shown once), stored as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.platform.db import ApiToken
from powernode.platform.problems import AuthenticationError, InvalidInputError, NotFoundError
from powernode.platform.services import audit
from powernode.platform.services.context import SCOPES, Actor, Ctx, expand_scopes

TOKEN_PREFIX = "pnt_"  # noqa: S105 - a prefix that marks our tokens, not a secret
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
_MAX_TOKEN_LEN = 200


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    ctx: Ctx,
    name: str,
    scopes: list[str],
    *,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret; the secret is not stored and cannot be shown again."""
    if not _NAME.match(name):
        raise InvalidInputError(
            f"token name {name!r}: use 1-128 letters, digits, '.', '_', '@', ':' or '-'",
            field="name",
        )
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInputError(
            f"scopes {', '.join(unknown) or '(none)'}: choose from {', '.join(SCOPES)}",
            field="scopes",
        )
    if expires_at is not None and expires_at <= ctx.now:
        raise InvalidInputError(f"expires_at {expires_at.isoformat()} is in the past")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        account=ctx.actor.account,
        name=name,
        token_hash=hash_secret(secret),
        scopes=" ".join(s for s in SCOPES if s in scopes),
        created_at=ctx.now,
        expires_at=expires_at,
    )
    ctx.session.add(token)
    ctx.session.flush()
    audit.record(
        ctx,
        action="token.create",
        target_type="api_token",
        target_id=token.id,
        summary=f"created token {name}",
        detail={"scopes": scopes},
    )
    return token, secret


def authenticate(session: Session, secret: str, now: datetime) -> Actor:
    """The actor behind a bearer secret, or AuthenticationError saying why not."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > _MAX_TOKEN_LEN:
        raise AuthenticationError(
            "the bearer token is not a powernode API token (they start with 'pnt_'); "
            "create one with: powernode platform token create"
        )
    digest = hash_secret(secret)
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    # compare_digest: the lookup is by hash already, this keeps the check constant-time.
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise AuthenticationError(
            "unknown API token; create one with: powernode platform token create"
        )
    if token.revoked_at is not None:
        raise AuthenticationError(f"API token {token.name!r} was revoked; create a new one")
    if token.expires_at is not None and token.expires_at <= now:
        raise AuthenticationError(
            f"API token {token.name!r} expired at {token.expires_at.isoformat()}; create a new one"
        )
    return actor_for(token)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.name)))


def revoke_token(ctx: Ctx, token_id: str) -> ApiToken:
    token = ctx.session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError(
            f"API token {token_id!r} not found; list them: powernode platform token list"
        )
    if token.revoked_at is None:
        token.revoked_at = ctx.now
        audit.record(
            ctx,
            action="token.revoke",
            target_type="api_token",
            target_id=token.id,
            summary=f"revoked token {token.name}",
        )
    return token


def actor_for(token: ApiToken) -> Actor:
    return Actor(
        name=token.name,
        token_id=token.id,
        scopes=expand_scopes(frozenset(token.scopes.split())),
        account=token.account,
    )
