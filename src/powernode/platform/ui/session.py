"""The console's session: an API token turned into a sealed cookie, and CSRF.

The login form takes an API token (``pnt_…``); the session cookie holds it sealed
with the platform's key (AES-GCM, bound to the purpose ``ui-session``), with an
expiry and a per-session CSRF secret. Every request authenticates the token
again, exactly as the REST API does: a revoked token or a lost scope takes
effect on the next click, and the console can never do more than the token.

CSRF, twice over: the cookie is ``SameSite=Strict`` and ``HttpOnly``, and every
form carries the session's CSRF value, compared in constant time on POST (a
request whose ``Origin`` names another site is refused before that).
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass

from powernode.errors import VerificationError
from powernode.platform.sealing import Sealer

COOKIE = "pn_session"
PURPOSE = "ui-session"
LIFETIME_SECONDS = 8 * 3600


@dataclass(frozen=True)
class UiSession:
    token: str
    csrf: str
    expires: float

    def check_csrf(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


def new_session(token: str, now: float | None = None) -> UiSession:
    issued = time.time() if now is None else now
    return UiSession(token=token, csrf=secrets.token_urlsafe(32), expires=issued + LIFETIME_SECONDS)


def seal(sealer: Sealer, s: UiSession) -> str:
    return sealer.seal(json.dumps({"t": s.token, "c": s.csrf, "e": s.expires}), PURPOSE)


def open_cookie(sealer: Sealer, value: str | None, now: float | None = None) -> UiSession | None:
    """The session in the cookie, or None when absent, tampered with or expired."""
    if not value or len(value) > 4096:
        return None
    try:
        doc = json.loads(sealer.open(value, PURPOSE))
        s = UiSession(token=str(doc["t"]), csrf=str(doc["c"]), expires=float(doc["e"]))
    except (VerificationError, ValueError, KeyError, TypeError):
        return None
    if (time.time() if now is None else now) >= s.expires:
        return None
    return s
