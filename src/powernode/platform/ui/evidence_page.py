"""The console's evidence page of a version: evidence, findings, and each state's verdict.

A separate router so the console's routes module stays as it is; it uses the
same session, rendering and error handling (``ui.core.page``); it only reads.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from powernode.platform.services import evidence
from powernode.platform.ui.core import actor_of, page, read, render

router = APIRouter(prefix="/app", include_in_schema=False)


@router.get("/system/versions/{version_id}/evidence")
@page
def version_evidence(request: Request) -> Response:
    """What the version's policy sees and what it answers for staging, blessed and live."""
    s, actor = actor_of(request)
    with read(request, actor) as ctx:
        data = evidence.describe(ctx, request.path_params["version_id"])
    return render(request, "version_evidence.html", csrf=s.csrf, actor=actor, v=data)
