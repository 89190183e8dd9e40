"""The error responses every operator endpoint may give, for /openapi.json.

Errors are RFC 9457 ``application/problem+json`` (platform/problems.py);
documenting them lets clients (and schemathesis) check error bodies too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from powernode.platform.problems import PROBLEM_CONTENT_TYPE


class ProblemOut(BaseModel):
    """RFC 9457 members; extension members (``field``, ``errors`` …) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


_WHY = {
    400: "malformed request",
    401: "no, unknown, expired or revoked token; a bad webhook signature",
    403: "the token lacks the scope, or live needs an approval",
    404: "unknown module, version, template, node or instance",
    409: "duplicate, still referenced, illegal transition, replayed webhook, unresolvable",
    413: "body over max_body_bytes",
    422: "input that does not fit the schema or the domain rules",
}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": f"problem details: {why}",
        "content": {PROBLEM_CONTENT_TYPE: {"schema": ProblemOut.model_json_schema()}},
    }
    for status, why in _WHY.items()
}

RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "problem details: the node is over its limit for this request "
        "(docs/node-api.md, rate limits); nothing was changed",
        "headers": {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": {PROBLEM_CONTENT_TYPE: {"schema": ProblemOut.model_json_schema()}},
    }
}
