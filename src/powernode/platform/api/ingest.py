"""Ingest: ``/webhooks/{gitea,github}/module`` (HMAC, no bearer token) and
``/node_modules/{name}/ingests`` (the queue, per module)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas_ingest import IngestOut, IngestRequest, WebhookOut
from powernode.platform.services import ingest, webhooks
from powernode.platform.services.context import Actor

router = APIRouter(tags=["ingest"])

_SIGNED_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the event JSON, signed (HMAC-SHA256) with the module's webhook secret",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _wake(request: Request) -> None:
    worker = getattr(request.app.state, "ingest_worker", None)
    if worker is not None:
        worker.wake()


async def _receive(request: Request, state: State, provider: webhooks.Provider) -> WebhookOut:
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}

    def work() -> WebhookOut:
        anonymous = Actor(f"webhook:{provider}", None, frozenset())
        with state.unit(anonymous) as ctx:
            signed = webhooks.authenticate(ctx, state.sealer, provider, body, headers)
        # A transaction of its own, begun by the insert that claims the delivery.
        with state.unit(anonymous) as ctx:
            out = webhooks.record(ctx, signed)
            return WebhookOut(
                delivery_id=out.delivery.delivery_id,
                module_name=out.module.name,
                ingest=IngestOut.of(out.ingest) if out.ingest else None,
                ignored=out.ignored,
            )

    result = await run_in_threadpool(work)
    _wake(request)
    return result


@router.post(
    "/webhooks/gitea/module", status_code=status.HTTP_202_ACCEPTED, openapi_extra=_SIGNED_BODY
)
async def gitea_module(request: Request, state: State) -> WebhookOut:
    """Seed 004: the module repo's CI reports a pushed tag (X-Gitea-Signature: hex HMAC)."""
    return await _receive(request, state, "gitea")


@router.post(
    "/webhooks/github/module", status_code=status.HTTP_202_ACCEPTED, openapi_extra=_SIGNED_BODY
)
async def github_module(request: Request, state: State) -> WebhookOut:
    """GitHub-style delivery (X-Hub-Signature-256: sha256=<hex>, X-GitHub-Delivery)."""
    return await _receive(request, state, "github")


@router.get("/node_modules/{name}/ingests")
def list_ingests(
    name: str,
    state: State,
    actor: Reader,
    limit: Annotated[int, Query(ge=1, le=ingest.MAX_LIST)] = 100,
) -> dict[str, list[IngestOut]]:
    """The module's ingests, newest first: what was built, rejected (and why) or is queued."""
    with state.unit(actor) as ctx:
        return {"ingests": [IngestOut.of(j) for j in ingest.list_ingests(ctx, name, limit)]}


@router.post("/node_modules/{name}/ingests", status_code=status.HTTP_202_ACCEPTED)
def queue_ingest(
    name: str, body: IngestRequest, request: Request, state: State, actor: CurrentActor
) -> dict[str, IngestOut]:
    """Queue (or retry) the ingest of one tag, as a webhook would."""
    with state.unit(actor) as ctx:
        out = IngestOut.of(ingest.queue_by_name(ctx, name, body.tag))
    _wake(request)
    return {"ingest": out}
