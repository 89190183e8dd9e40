"""Platform errors and their RFC 9457 problem-details form.

The services raise these (no HTTP in them); the API turns each into
``application/problem+json`` with ``type``, ``title``, ``status``, ``detail``
(what was wrong and what to do) and, where known, ``instance`` (the request
path) plus extension members (``field``, ``errors``, ``current_state`` ...).

::

    PowernodeError
    └── PlatformError                    status, problem type
        ├── NotFoundError           404  unknown module, version, template, node, instance
        ├── ConflictError           409  duplicate name, still referenced
        ├── TransitionError         409  illegal promotion_state transition
        ├── InvalidInputError       422  a field value the schema cannot express as wrong
        ├── AuthenticationError     401  missing, unknown, expired or revoked token
        ├── PermissionDeniedError   403  the token lacks the scope
        ├── ApprovalRequiredError   403  live needs an approval (require_approval policy)
        ├── PayloadTooLargeError    413  body over max_body_bytes
        ├── RateLimitedError        429  a node over its rotation or event limit (Retry-After)
        └── BusyError               503  SQLite's write lock still taken after busy_timeout
"""

from __future__ import annotations

from typing import ClassVar

from powernode.errors import PowernodeError

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://powernode.dev/problems/"


class PlatformError(PowernodeError):
    """An error with an HTTP status and a problem type; ``extra`` adds members."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extra: object) -> None:
        self.detail = detail
        self.extra = extra
        super().__init__(detail)

    def problem(self, instance: str | None = None) -> dict[str, object]:
        return problem_body(
            self.status, self.slug, self.title, self.detail, instance=instance, extra=self.extra
        )


class NotFoundError(PlatformError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ConflictError(PlatformError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class TransitionError(ConflictError):
    slug = "illegal-transition"
    title = "Illegal promotion transition"


class InvalidInputError(PlatformError):
    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class AuthenticationError(PlatformError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class PermissionDeniedError(PlatformError):
    status = 403
    slug = "forbidden"
    title = "Permission denied"


class ApprovalRequiredError(PermissionDeniedError):
    slug = "approval-required"
    title = "Approval required"


class PayloadTooLargeError(PlatformError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class RateLimitedError(PlatformError):
    """429; ``retry_after`` (whole seconds) is sent as the ``Retry-After`` header too."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extra: object) -> None:
        self.retry_after = retry_after
        super().__init__(detail, retry_after=retry_after, **extra)


class BusyError(PlatformError):
    """503: the database's write lock stayed taken (SQLite); ``retry_after`` as for 429."""

    status = 503
    slug = "busy"
    title = "Busy"

    def __init__(self, detail: str, *, retry_after: int = 1, **extra: object) -> None:
        self.retry_after = retry_after
        super().__init__(detail, retry_after=retry_after, **extra)


def problem_body(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    """The RFC 9457 members, then the extensions (which never override them)."""
    body: dict[str, object] = dict(extra or {})
    body.update({"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail})
    if instance is not None:
        body["instance"] = instance
    return body
