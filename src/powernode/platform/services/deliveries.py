"""Webhook deliveries as the operator sees them, each beside the ingest it queued.

A delivery row (services/webhooks.py) records what a repository's CI sent;
the ingest row of the same module and tag records what became of it (state,
attempts, reason). This module lists the two together, newest first, paged
by keyset, and *redelivers*: queues the delivery's tag again through
:func:`.ingest.queue_ingest` — the same function a webhook and ``powernode
system ingest-module-version`` use, so a tag already queued, running or built
is left as it is, and a rejected or failed one is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, literal, or_, select

from powernode.platform.db.catalog import NodeModule
from powernode.platform.db.ingest import IngestState, ModuleIngest, WebhookDelivery
from powernode.platform.problems import ConflictError, InvalidInputError, NotFoundError
from powernode.platform.services import ingest
from powernode.platform.services.context import READ, WRITE, Ctx
from powernode.platform.services.paging import parse_cursor

MAX_LIST = 500
# A delivery's status: its ingest's state, or "ignored" (not a tag, nothing queued).
STATUSES = (*(s.value for s in IngestState), "ignored")


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    provider: str
    delivery_id: str
    module: str
    event: str
    ref: str
    tag: str | None
    received_at: datetime
    status: str
    attempts: int
    reason: str
    ingest_id: str | None


def tag_of(ref: str) -> str | None:
    """The tag a delivery's ref names (services/webhooks.parse_payload's rule)."""
    if ref.startswith("refs/tags/"):
        return ref[len("refs/tags/") :]
    return None if ref.startswith("refs/") or not ref else ref


def _same_tag() -> ColumnElement[bool]:
    return and_(
        ModuleIngest.module_id == WebhookDelivery.module_id,
        or_(
            ModuleIngest.tag == WebhookDelivery.ref,
            WebhookDelivery.ref == literal("refs/tags/") + ModuleIngest.tag,
        ),
    )


def _query(ctx: Ctx) -> Select[WebhookDelivery, str, ModuleIngest]:
    return (
        select(WebhookDelivery, NodeModule.name, ModuleIngest)
        .join(NodeModule, NodeModule.id == WebhookDelivery.module_id)
        .outerjoin(ModuleIngest, _same_tag())
        .where(NodeModule.account == ctx.actor.account)
    )


def _row(d: WebhookDelivery, module: str, job: ModuleIngest | None) -> DeliveryRow:
    return DeliveryRow(
        id=d.id, provider=d.provider, delivery_id=d.delivery_id, module=module, event=d.event,
        ref=d.ref, tag=tag_of(d.ref), received_at=d.received_at,
        status=job.state if job is not None else "ignored",
        attempts=job.attempts if job is not None else 0,
        reason=job.reason if job is not None else "", ingest_id=job.id if job else None,
    )  # fmt: skip


def list_deliveries(
    ctx: Ctx,
    *,
    module: str = "",
    provider: str = "",
    status: str = "",
    after: str = "",
    limit: int = 50,
) -> list[DeliveryRow]:
    """Newest first, after the cursor ``after`` (``<received_at ISO>|<id>``)."""
    ctx.actor.require(READ, "listing webhook deliveries")
    if status and status not in STATUSES:
        raise InvalidInputError(f"status {status!r}: one of {', '.join(STATUSES)}", field="status")
    q = _query(ctx)
    if module:
        q = q.where(NodeModule.name == module)
    if provider:
        q = q.where(WebhookDelivery.provider == provider)
    if status == "ignored":
        q = q.where(ModuleIngest.id.is_(None))
    elif status:
        q = q.where(ModuleIngest.state == status)
    cursor = parse_cursor(after)
    if cursor is not None:
        at, did = cursor
        q = q.where(
            (WebhookDelivery.received_at < at)
            | ((WebhookDelivery.received_at == at) & (WebhookDelivery.id > did))
        )
    q = q.order_by(WebhookDelivery.received_at.desc(), WebhookDelivery.id)
    rows = ctx.session.execute(q.limit(max(1, min(limit, MAX_LIST)))).all()
    return [_row(d, name, job) for d, name, job in rows]


def get_delivery(ctx: Ctx, delivery_row_id: str) -> DeliveryRow:
    ctx.actor.require(READ, "reading a webhook delivery")
    found = ctx.session.execute(_query(ctx).where(WebhookDelivery.id == delivery_row_id)).first()
    if found is None:
        raise NotFoundError(
            f"webhook delivery {delivery_row_id!r} not found", delivery=delivery_row_id
        )
    return _row(*found)


def redeliver(ctx: Ctx, delivery_row_id: str) -> DeliveryRow:
    """Queue the delivery's tag again (a retry when it was rejected or failed)."""
    ctx.actor.require(WRITE, "redelivering a webhook")
    row = get_delivery(ctx, delivery_row_id)
    if row.tag is None:
        raise ConflictError(
            f"delivery {row.delivery_id} was for {row.ref}, not a tag: nothing to ingest",
            delivery=delivery_row_id,
        )
    module = ctx.session.scalars(
        select(NodeModule).join(WebhookDelivery, WebhookDelivery.module_id == NodeModule.id)
        .where(WebhookDelivery.id == delivery_row_id)
    ).one()  # fmt: skip
    ingest.queue_ingest(ctx, module, row.tag, "operator")
    ctx.session.flush()
    return get_delivery(ctx, delivery_row_id)
