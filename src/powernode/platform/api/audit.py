"""The audit log: ``/audit_log`` (read scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

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
