"""Bootstrap tokens as the operator sees them: listed by state, revoked before use.

Creation is :func:`.enroll.create_bootstrap_token` (the secret is returned
there, once). A token has no revoked column: revoking one ends its life now
(``expires_at`` = the revocation's time), which :func:`.enroll.enroll`
already refuses, and the audit log says who revoked it and when. The
revocation is a compare-and-set (``UPDATE … WHERE used_at IS NULL AND
expires_at > now``): a token an enrollment consumed in between is not
"revoked" after the fact, and the caller is told so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, select, update

from powernode.platform.db import BootstrapToken, Node, NodeInstance
from powernode.platform.problems import ConflictError, InvalidInputError, NotFoundError
from powernode.platform.services import audit
from powernode.platform.services.context import READ, WRITE, Ctx
from powernode.platform.services.paging import parse_cursor

TokenState = Literal["live", "used", "expired"]
STATES: tuple[TokenState, ...] = ("live", "used", "expired")
MAX_LIST = 500


@dataclass(frozen=True)
class TokenRow:
    id: str
    instance_id: str
    hostname: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    state: TokenState


def state_of(token: BootstrapToken, now: datetime) -> TokenState:
    if token.used_at is not None:
        return "used"
    return "live" if token.expires_at > now else "expired"


def _scoped(ctx: Ctx) -> Select[BootstrapToken, str]:
    return (
        select(BootstrapToken, NodeInstance.hostname)
        .join(NodeInstance, NodeInstance.id == BootstrapToken.instance_id)
        .join(Node, Node.id == NodeInstance.node_id)
        .where(Node.account == ctx.actor.account)
    )


def list_tokens(
    ctx: Ctx,
    *,
    state: str = "",
    instance: str = "",
    after: str = "",
    limit: int = 50,
) -> list[TokenRow]:
    """Newest first, ``limit`` at most, after the cursor ``after`` (keyset, not offset)."""
    ctx.actor.require(READ, "listing bootstrap tokens")
    if state and state not in STATES:
        raise InvalidInputError(f"state {state!r}: one of {', '.join(STATES)}", field="state")
    q = _scoped(ctx)
    if state == "used":
        q = q.where(BootstrapToken.used_at.is_not(None))
    elif state == "live":
        q = q.where(BootstrapToken.used_at.is_(None), BootstrapToken.expires_at > ctx.now)
    elif state == "expired":
        q = q.where(BootstrapToken.used_at.is_(None), BootstrapToken.expires_at <= ctx.now)
    if instance:
        q = q.where((NodeInstance.id == instance) | (NodeInstance.hostname == instance))
    cursor = parse_cursor(after)
    if cursor is not None:
        at, tid = cursor
        q = q.where(
            (BootstrapToken.created_at < at)
            | ((BootstrapToken.created_at == at) & (BootstrapToken.id > tid))
        )
    q = q.order_by(BootstrapToken.created_at.desc(), BootstrapToken.id)
    rows = ctx.session.execute(q.limit(max(1, min(limit, MAX_LIST)))).all()
    return [
        TokenRow(t.id, t.instance_id, host, t.created_by, t.created_at, t.expires_at,
                 t.used_at, state_of(t, ctx.now))
        for t, host in rows
    ]  # fmt: skip


def revoke(ctx: Ctx, token_id: str) -> TokenRow:
    """End an unused token's life now; refused (409) for a used or expired one."""
    ctx.actor.require(WRITE, "revoking a bootstrap token")
    found = ctx.session.execute(_scoped(ctx).where(BootstrapToken.id == token_id)).first()
    if found is None:
        raise NotFoundError(f"bootstrap token {token_id!r} not found", token_id=token_id)
    token, host = found
    done = ctx.session.execute(
        update(BootstrapToken)
        .where(
            BootstrapToken.id == token_id,
            BootstrapToken.used_at.is_(None),
            BootstrapToken.expires_at > ctx.now,
        )
        .values(expires_at=ctx.now)
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 0) != 1:
        ctx.session.refresh(token)
        raise ConflictError(
            f"bootstrap token {token_id} is {state_of(token, ctx.now)}: only a live token "
            "can be revoked (a used one is spent; revoke the instance's certificates "
            "instead: powernode system revoke-instance-certificates)",
            token_id=token_id,
        )
    audit.record(
        ctx,
        action="instance.bootstrap_token.revoke",
        target_type="node_instance",
        target_id=token.instance_id,
        summary=f"revoked bootstrap token {token_id} of instance {token.instance_id} ({host})",
        detail={"token_id": token_id},
    )
    ctx.session.refresh(token)
    return TokenRow(token.id, token.instance_id, host, token.created_by, token.created_at,
                    token.expires_at, token.used_at, "expired")  # fmt: skip
