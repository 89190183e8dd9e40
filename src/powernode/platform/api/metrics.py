"""``GET /metrics``: Prometheus' text exposition format (read scope).

Scraped with a token (Prometheus ``authorization: {credentials_file: …}``): the
figures name templates and count the fleet, which is the operator's to see.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from powernode.platform.api.deps import Reader
from powernode.platform.metrics import CONTENT_TYPE_LATEST, Metrics

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, _actor: Reader) -> Response:
    """The platform's and the fleet's figures for Prometheus."""
    m = request.app.state.metrics
    assert isinstance(m, Metrics)
    body = await run_in_threadpool(m.render)  # the fleet part reads the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)
