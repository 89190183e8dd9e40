"""The error responses every operator endpoint may give, for /openapi.json.

Errors are RFC 9457 ``application/problem+json`` (platform/problems.py);
documenting them lets clients (and schemathesis) check error bodies too.
"""

from __future__ import annotations

import copy

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
    401: "no, unknown, expired or revoked token; a bad webhook signature or an unknown module",
    403: "the token lacks the scope, or live needs an approval",
    404: "unknown module, version, template, node or instance (in the path or the body)",
    409: "duplicate, still referenced, illegal transition, replayed webhook, unresolvable",
    413: "body over max_body_bytes",
    422: "input that does not fit the schema or the domain rules",
    429: "too many requests from this caller; retry after the time Retry-After gives",
}

# Built once (at import, on the platform's start path), copied per status as it was made.
_SCHEMA = ProblemOut.model_json_schema()
# Headers a problem response may carry (RFC 9110 §11.6.1, RFC 6585 §4 / RFC 9110 §10.2.3).
_HEADERS: dict[int, dict[str, object]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme to authenticate with (Bearer)",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "string"},
        }
    },
}


def _response(status: int, why: str) -> dict[str, object]:
    out: dict[str, object] = {
        "description": f"problem details: {why}",
        "content": {PROBLEM_CONTENT_TYPE: {"schema": copy.deepcopy(_SCHEMA)}},
    }
    if status in _HEADERS:
        out["headers"] = _HEADERS[status]
    return out


# Declared on every router at include time (app.py), so every operation, including
# those added later, documents every status the shared handlers can give it.
PROBLEM_RESPONSES: dict[int | str, dict[str, object]] = {
    status: _response(status, why) for status, why in _WHY.items()
}

RATE_LIMITED: dict[int | str, dict[str, object]] = {
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
