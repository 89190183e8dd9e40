"""Operator endpoints for the node API: bootstrap tokens, revocation, tasks, events.

``POST /node_instances/{id}/bootstrap_tokens`` (secret shown once),
``GET …/certificates``, ``POST …/certificates/revoke``, ``POST|GET …/tasks``,
``GET …/events``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas.nodeapi import (
    BootstrapTokenIn,
    BootstrapTokenInfo,
    BootstrapTokenOut,
    CertificateOut,
    EventOut,
    TaskIn,
    TaskOut,
)
from powernode.platform.services import paging
from powernode.platform.services.nodeapi import bootstrap_tokens, enroll, events, tasks

router = APIRouter(tags=["node API (operator)"])
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("/node_instances/{instance_id}/bootstrap_tokens", status_code=status.HTTP_201_CREATED)
def create_bootstrap_token(
    instance_id: str, body: BootstrapTokenIn, state: State, actor: CurrentActor
) -> BootstrapTokenOut:
    """A single-use enrollment token for the instance; the secret is shown only here."""
    ttl = timedelta(seconds=body.ttl_seconds or state.settings.bootstrap_token_ttl_seconds)
    with state.unit(actor) as ctx:
        token, secret = enroll.create_bootstrap_token(ctx, instance_id, ttl)
    return BootstrapTokenOut(
        token=secret, token_id=token.id, instance_id=token.instance_id, expires_at=token.expires_at
    )


@router.get("/bootstrap_tokens")
def list_bootstrap_tokens(
    state: State,
    actor: Reader,
    *,
    status: Annotated[Literal["", "live", "used", "expired"], Query()] = "",
    instance: Annotated[str, Query(description="an instance id or hostname")] = "",
    after: Annotated[str, Query(pattern=paging.PATTERN, description="the 'next' of a page")] = "",
    limit: Annotated[int, Query(ge=1, le=bootstrap_tokens.MAX_LIST)] = 50,
) -> dict[str, list[BootstrapTokenInfo] | str | None]:
    """Bootstrap tokens (never their secrets), newest first; ``next`` is the cursor of
    the following page (keyset), null on the last."""
    with state.unit(actor, write=False) as ctx:
        rows = bootstrap_tokens.list_tokens(
            ctx, state=status, instance=instance, after=after, limit=limit + 1
        )
    shown = rows[:limit]
    nxt = paging.cursor(shown[-1].created_at, shown[-1].id) if len(rows) > limit else None
    return {"bootstrap_tokens": [BootstrapTokenInfo.of(t) for t in shown], "next": nxt}


@router.post("/bootstrap_tokens/{token_id}/revoke")
def revoke_bootstrap_token(
    token_id: str, state: State, actor: CurrentActor
) -> dict[str, BootstrapTokenInfo]:
    """End a live token's life now (409 for a used or expired one)."""
    with state.unit(actor) as ctx:
        return {"bootstrap_token": BootstrapTokenInfo.of(bootstrap_tokens.revoke(ctx, token_id))}


@router.get("/node_instances/{instance_id}/certificates")
def list_certificates(
    instance_id: str, state: State, actor: Reader
) -> dict[str, list[CertificateOut]]:
    with state.unit(actor, write=False) as ctx:
        certs = enroll.list_certificates(ctx, instance_id)
        live = enroll.live_serials(ctx, instance_id)
        return {"certificates": [CertificateOut.of(c, live) for c in certs]}


@router.post("/node_instances/{instance_id}/certificates/revoke")
def revoke_certificates(
    instance_id: str, state: State, actor: CurrentActor
) -> dict[str, list[str]]:
    """Revoke every certificate of the instance: refused by every process from the commit on."""
    with state.unit(actor) as ctx:
        serials = enroll.revoke_instance(ctx, instance_id)
    return {"revoked": serials}


@router.post("/node_instances/{instance_id}/tasks", status_code=status.HTTP_201_CREATED)
def enqueue_task(
    instance_id: str, body: TaskIn, state: State, actor: CurrentActor
) -> dict[str, TaskOut]:
    with state.unit(actor) as ctx:
        task = tasks.enqueue(ctx, instance_id, body.kind, body.payload, body.max_attempts)
        return {"task": TaskOut.of(task)}


@router.get("/node_instances/{instance_id}/tasks")
def list_tasks(
    instance_id: str, state: State, actor: Reader, limit: Limit = 100
) -> dict[str, list[TaskOut]]:
    with state.unit(actor) as ctx:
        return {"tasks": [TaskOut.of(t) for t in tasks.list_tasks(ctx, instance_id, limit)]}


@router.get("/node_instances/{instance_id}/events")
def list_events(
    instance_id: str, state: State, actor: Reader, kind: str | None = None, limit: Limit = 100
) -> dict[str, list[EventOut]]:
    with state.unit(actor) as ctx:
        found = events.list_events(ctx, instance_id, kind=kind, limit=limit)
        return {"events": [EventOut.of(e) for e in found]}
