"""Who is acting, on which session, at what time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from powernode.platform.problems import PermissionDeniedError

READ = "read"
WRITE = "write"
PROMOTE_LIVE = "promote-live"
SCOPES = (READ, WRITE, PROMOTE_LIVE)
# A token that may change things may also look at them.
_IMPLIES = {WRITE: {READ}, PROMOTE_LIVE: {READ}}


def expand_scopes(scopes: set[str] | frozenset[str]) -> frozenset[str]:
    out = set(scopes)
    for s in scopes:
        out |= _IMPLIES.get(s, set())
    return frozenset(out)


@dataclass(frozen=True)
class Actor:
    """The operator behind a request: a token, or a local admin on the CLI."""

    name: str
    token_id: str | None
    scopes: frozenset[str]
    account: str = "default"

    def require(self, scope: str, action: str) -> None:
        if scope not in self.scopes:
            have = ", ".join(sorted(self.scopes)) or "none"
            raise PermissionDeniedError(
                f"{action} needs the {scope!r} scope; token {self.name!r} has: {have}. "
                f"Create a token with it: powernode platform token create --scope {scope}",
                required_scope=scope,
            )


@dataclass(frozen=True)
class Ctx:
    session: Session
    actor: Actor
    now: datetime
