"""Errors of the OCI layer, placed in powernode's one tree (``powernode.errors``)::

DataError
└── NotFoundError          a reference, tag or blob the store does not have
TransportError
├── AuthError              401/403: missing or refused credentials
└── UploadInterruptedError a chunked push that stopped; carries where to resume
"""

from __future__ import annotations

import json

import httpx

from powernode.errors import DataError, TransportError


class NotFoundError(DataError):
    """The registry or layout has nothing under this name or digest."""


class AuthError(TransportError):
    """The registry refused the request for lack of (valid) credentials."""


class UploadInterruptedError(TransportError):
    """A chunked upload failed after ``offset`` bytes; ``location`` resumes it.

    Pass ``location`` back as ``push_blob(..., resume_location=...)``. A
    registry that lost the session (distribution 2.x drops an upload whose
    chunk was cut mid-body) makes the resumed push start over.
    """

    def __init__(self, message: str, location: str, offset: int) -> None:
        self.location = location
        self.offset = offset
        super().__init__(message)


def error_detail(resp: httpx.Response) -> str:
    """`` (CODE, …)`` from a distribution error body (spec "Error Codes"), or ``""``."""
    try:
        body = json.loads(resp.read()[:65536])
        codes = [str(e.get("code")) for e in body.get("errors", []) if isinstance(e, dict)]
    except (ValueError, AttributeError, httpx.HTTPError, httpx.StreamError):
        return ""
    return f" ({', '.join(codes)})" if codes else ""


class RangeNotSupportedError(TransportError):
    """The registry answered a ``Range`` request with the whole blob (200, not 206).

    Ranges are optional for registries (distribution spec: "Range requests may
    be supported"); the caller falls back to fetching the whole blob.
    """
