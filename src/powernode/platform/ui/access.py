"""Console pages for bootstrap tokens (list, create — the secret shown once —,
revoke) and webhook deliveries (list with status and attempts, redeliver).

The same service functions as ``/bootstrap_tokens``, ``/node_instances/{id}/
bootstrap_tokens`` and ``/webhook_deliveries`` (services/nodeapi/
bootstrap_tokens.py, enroll.py, services/deliveries.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from powernode.platform.problems import InvalidInputError, PlatformError
from powernode.platform.services import deliveries
from powernode.platform.services.context import Ctx
from powernode.platform.services.nodeapi import bootstrap_tokens, enroll
from powernode.platform.services.paging import cursor
from powernode.platform.ui.core import (
    PAGE,
    Form,
    actor_of,
    bulk,
    one,
    page,
    posted,
    read,
    render,
    state_of,
    unit,
)

router = APIRouter()


# -- bootstrap tokens -----------------------------------------------------------------


@router.get("/system/bootstrap-tokens")
@page
def tokens_page(request: Request) -> Response:
    """Bootstrap tokens, newest first, filtered by state and instance, paged by keyset."""
    s, actor = actor_of(request)
    state = request.query_params.get("state") or ""
    instance = request.query_params.get("instance") or ""
    after = request.query_params.get("after") or ""
    with read(request, actor) as ctx:
        rows = bootstrap_tokens.list_tokens(
            ctx, state=state, instance=instance, after=after, limit=PAGE + 1
        )
    shown = rows[:PAGE]
    nxt = cursor(shown[-1].created_at, shown[-1].id) if len(rows) > PAGE else None
    return render(
        request, "tokens.html", csrf=s.csrf, actor=actor, tokens=shown,
        states=bootstrap_tokens.STATES, state=state, instance=instance, next_after=nxt,
        default_ttl=state_of(request).settings.bootstrap_token_ttl_seconds,
    )  # fmt: skip


@router.post("/system/bootstrap-tokens")
async def token_create(request: Request) -> Response:
    """Create a token for an instance and show its secret, once: it is not kept
    (only its hash), so the page is not a redirect and is never cached."""
    checked = await posted(request)
    if isinstance(checked, Response):
        return checked
    s, actor, form = checked
    state = state_of(request)

    def create() -> tuple[str, str, str]:
        raw = one(form, "ttl_seconds")
        if raw and not raw.isdigit():
            raise InvalidInputError(f"ttl {raw!r}: a whole number of seconds", field="ttl")
        ttl = timedelta(seconds=int(raw) if raw else state.settings.bootstrap_token_ttl_seconds)
        with unit(request, actor) as ctx:
            token, secret = enroll.create_bootstrap_token(ctx, one(form, "instance"), ttl)
            return secret, token.instance_id, token.expires_at.isoformat(timespec="seconds")

    try:
        secret, iid, expires = await asyncio.to_thread(create)
    except PlatformError as e:
        return render(request, "error.html", e.status, title=f"{e.status} {e.title}",
                      message=e.detail, csrf=s.csrf, actor=actor)  # fmt: skip
    return render(request, "token_created.html", csrf=s.csrf, actor=actor, secret=secret,
                  instance=iid, expires=expires)  # fmt: skip


def _revoke_one(ctx: Ctx, token_id: str, _form: Form) -> tuple[str, str]:
    t = bootstrap_tokens.revoke(ctx, token_id)
    return f"{t.hostname} ({t.id[:8]})", "revoked"


router.add_api_route(
    "/system/bootstrap-tokens/bulk-revoke",
    bulk(lambda _f: "Bootstrap token revocation", "token", "/app/system/bootstrap-tokens",
         _revoke_one),
    methods=["POST"],
)  # fmt: skip


# -- webhook deliveries -----------------------------------------------------------------


@router.get("/system/deliveries")
@page
def deliveries_page(request: Request) -> Response:
    """Webhook deliveries, newest first, with their ingest's status and attempts;
    filtered by module, provider and status, paged by keyset."""
    s, actor = actor_of(request)
    module = request.query_params.get("module") or ""
    provider = request.query_params.get("provider") or ""
    status = request.query_params.get("status") or ""
    after = request.query_params.get("after") or ""
    with read(request, actor) as ctx:
        rows = deliveries.list_deliveries(
            ctx, module=module, provider=provider, status=status, after=after, limit=PAGE + 1
        )
    shown = rows[:PAGE]
    nxt = cursor(shown[-1].received_at, shown[-1].id) if len(rows) > PAGE else None
    return render(
        request, "deliveries.html", csrf=s.csrf, actor=actor, deliveries=shown,
        statuses=deliveries.STATUSES, module=module, provider=provider, status=status,
        next_after=nxt,
    )  # fmt: skip


def _redeliver_one(ctx: Ctx, row_id: str, _form: Form) -> tuple[str, str]:
    d = deliveries.redeliver(ctx, row_id)
    return f"{d.module} {d.tag}", f"ingest {d.status}"


router.add_api_route(
    "/system/deliveries/bulk-redeliver",
    bulk(lambda _f: "Redelivery", "delivery", "/app/system/deliveries", _redeliver_one),
    methods=["POST"],
)
