"""Ingest: ``/webhooks/{gitea,github}/module`` (HMAC, no bearer token) and
``/node_modules/{name}/ingests`` (the queue, per module)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import JsonValue

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas.ingest import (
    DeliveryOut,
    IngestOut,
    IngestRequest,
    WebhookOut,
)
from powernode.platform.services import deliveries, ingest, paging, webhooks
from powernode.platform.services.context import Actor

router = APIRouter(tags=["ingest"])
JsonSchema = dict[str, JsonValue]
DeliveryStatus = Literal["", "queued", "running", "built", "rejected", "failed", "ignored"]


def _text(max_length: int = 255) -> JsonSchema:
    return {"type": "string", "maxLength": max_length}


# What services/webhooks.py reads, as JSON Schema. Before the signature verifies only
# the module is looked for (module, or repository.full_name); the tag (tag, ref or
# release.tag_name, a SemVer version) and timestamp (Unix seconds or RFC 3339 with a
# zone, within 5 minutes) are checked after it. Other members (a native Gitea/GitHub
# event has many) are ignored.
_EVENT_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "module": _text(),
        "account": _text(),
        "repository": {"type": "object", "properties": {"full_name": _text()}},
        "tag": _text(),
        "ref": _text(),
        "release": {"type": "object", "properties": {"tag_name": _text()}},
        "timestamp": {"type": ["number", "string"]},
    },
    "anyOf": [
        {"required": ["module"]},
        {"required": ["repository"], "properties": {"repository": {"required": ["full_name"]}}},
    ],
}


def _header(name: str, pattern: str, description: str, required: bool = True) -> JsonSchema:
    schema: JsonSchema = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


_DELIVERY = "^[A-Za-z0-9._:-]{1,128}$"  # services/webhooks.py _DELIVERY


def _signed(signature: str, sig_pattern: str, delivery: str, event: str) -> JsonSchema:
    """openapi_extra of one provider's endpoint: its headers and the event body."""
    return {
        "parameters": [
            _header(signature, sig_pattern, "HMAC-SHA256 of the raw body, module's secret"),
            _header(delivery, _DELIVERY, "unique per delivery; a replay is refused (409)"),
            _header(event, "", "the event name (push, release, ...)", required=False),
        ],
        "requestBody": {
            "required": True,
            "description": "the event JSON, signed (HMAC-SHA256) with the module's webhook "
            f"secret; at most {webhooks.MAX_BODY} bytes",
            "content": {"application/json": {"schema": _EVENT_SCHEMA}},
        },
    }


_GITEA = _signed("X-Gitea-Signature", "^[0-9a-fA-F]{64}$", "X-Gitea-Delivery", "X-Gitea-Event")
_GITHUB = _signed(
    "X-Hub-Signature-256", "^sha256=[0-9a-fA-F]{64}$", "X-GitHub-Delivery", "X-GitHub-Event"
)


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


@router.post("/webhooks/gitea/module", status_code=status.HTTP_202_ACCEPTED, openapi_extra=_GITEA)
async def gitea_module(request: Request, state: State) -> WebhookOut:
    """Seed 004: the module repo's CI reports a pushed tag (X-Gitea-Signature: hex HMAC)."""
    return await _receive(request, state, "gitea")


@router.post("/webhooks/github/module", status_code=status.HTTP_202_ACCEPTED, openapi_extra=_GITHUB)
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


@router.get("/webhook_deliveries")
def list_deliveries(
    state: State,
    actor: Reader,
    *,
    module: str = "",
    provider: Literal["", "gitea", "github"] = "",
    status: Annotated[DeliveryStatus, Query(description="the ingest's state, or ignored")] = "",
    after: Annotated[str, Query(pattern=paging.PATTERN, description="the 'next' of a page")] = "",
    limit: Annotated[int, Query(ge=1, le=deliveries.MAX_LIST)] = 50,
) -> dict[str, list[DeliveryOut] | str | None]:
    """Webhook deliveries, newest first, each with its ingest's status and attempts;
    ``next`` is the cursor of the following page (keyset), null on the last."""
    with state.unit(actor, write=False) as ctx:
        rows = deliveries.list_deliveries(
            ctx, module=module, provider=provider, status=status, after=after, limit=limit + 1
        )
    shown = rows[:limit]
    nxt = paging.cursor(shown[-1].received_at, shown[-1].id) if len(rows) > limit else None
    return {"deliveries": [DeliveryOut.of(d) for d in shown], "next": nxt}


@router.post("/webhook_deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED)
def redeliver(
    delivery_id: str, request: Request, state: State, actor: CurrentActor
) -> dict[str, DeliveryOut]:
    """Queue the delivery's tag again: a rejected or failed ingest is retried; one
    queued, running or built is left as it is."""
    with state.unit(actor) as ctx:
        out = DeliveryOut.of(deliveries.redeliver(ctx, delivery_id))
    _wake(request)
    return {"delivery": out}
