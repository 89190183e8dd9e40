"""The audit log: ``/audit_log`` (read scope)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from powernode.platform.api.deps import Reader, State
from powernode.platform.api.schemas import AuditOut
from powernode.platform.services import audit

router = APIRouter(tags=["audit"])


@router.get("/audit_log")
def list_audit(
    state: State,
    actor: Reader,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIST)] = 100,
) -> dict[str, list[AuditOut]]:
    """Newest first."""
    with state.unit(actor) as ctx:
        rows = audit.list_entries(ctx, action=action, limit=limit)
        return {"audit_log": [AuditOut.of(e) for e in rows]}


class CallIn(BaseModel):
    """One call a front end (the MCP server) makes for the token's holder."""

    model_config = ConfigDict(extra="forbid")

    via: Literal["mcp"] = "mcp"
    kind: Literal["tool", "resource"] = "tool"
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:/{}@-]+$")
    arguments: dict[str, JsonValue] = Field(default_factory=dict, max_length=64)


@router.post("/audit_log/calls", status_code=status.HTTP_201_CREATED)
def record_call(body: CallIn, state: State, actor: Reader) -> dict[str, AuditOut]:
    """Record a call (a read too) under the token's identity, before the call is made;
    the MCP server refuses a tool call it could not record."""
    with state.unit(actor) as ctx:
        entry = audit.record_call(
            ctx, via=body.via, kind=body.kind, name=body.name, arguments=body.arguments
        )
        ctx.session.flush()
        return {"entry": AuditOut.of(entry)}
