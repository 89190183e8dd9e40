"""Registry authentication: Basic, and Bearer tokens from a challenge.

Flow (distribution "Token Authentication Specification", RFC 6750 §3):
a request answered ``401`` carries ``WWW-Authenticate: Basic realm=…`` or
``Bearer realm="<token url>",service="…",scope="repository:<name>:pull,push"``.
For Basic the credentials go on every later request to the registry host.
For Bearer the client GETs ``realm?service=…&scope=…`` (with Basic
credentials if it has any, anonymously otherwise), reads ``token`` or
``access_token`` from the JSON answer and retries with
``Authorization: Bearer <token>``. Tokens are cached per scope.

Credentials never leave for another origin, except to the token realm the
registry names; a realm on plain http while the registry uses https is
refused (it would send the password in clear).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass, field

import httpx

from powernode.oci.errors import AuthError

log = logging.getLogger(__name__)

MAX_TOKEN_RESPONSE = 1 << 20

_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",scope="y"`` -> ``("bearer", {"realm": "x", "scope": "y"})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for key, raw in _PARAM_RE.findall(rest):
        value = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        params[key.lower()] = value
    return scheme.lower(), params


class Authenticator:
    """Holds credentials and tokens; answers 401 challenges for one registry."""

    def __init__(self, registry_url: httpx.URL, credentials: Credentials | None) -> None:
        self._origin = (registry_url.scheme, registry_url.host, registry_url.port)
        self._credentials = credentials
        self._basic = False
        self._tokens: dict[str, str] = {}  # request key (repository + actions) -> token

    def same_origin(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == self._origin

    def headers(self, url: httpx.URL, key: str) -> dict[str, str]:
        """Authorization for a request to ``url`` under ``key``, if any is known."""
        if not self.same_origin(url):
            return {}
        if key in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[key]}"}
        if self._basic and self._credentials is not None:
            return {"Authorization": self._credentials.basic_header()}
        return {}

    def who(self) -> str:
        """Whom the registry refused, for error messages."""
        if self._credentials is None:
            return "anonymous access"
        return f"the credentials for user {self._credentials.username!r}"

    def answer(self, client: httpx.Client, url: httpx.URL, key: str, challenge: str | None) -> None:
        """Prepare credentials for a retry after a 401, or raise :class:`AuthError`."""
        where = f"{url.copy_with(query=None)}"
        if not challenge:
            raise AuthError(f"{where}: HTTP 401 without a WWW-Authenticate challenge")
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None:
                raise AuthError(
                    f"{where}: the registry asks for a user name and password (HTTP 401, "
                    "Basic); pass credentials"
                )
            self._basic = True
            return
        if scheme != "bearer":
            raise AuthError(f"{where}: unsupported authentication scheme {scheme!r}")
        self._tokens[key] = self._fetch_token(client, where, params)

    def _fetch_token(self, client: httpx.Client, where: str, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"{where}: Bearer challenge without a realm")
        realm_url = httpx.URL(realm)
        if realm_url.scheme not in {"http", "https"}:
            raise AuthError(f"{where}: token realm {realm!r} is not an http(s) URL")
        if realm_url.scheme == "http" and self._origin[0] == "https":
            raise AuthError(
                f"{where}: token realm {realm!r} is plain http; refusing to send "
                "credentials in clear"
            )
        query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
        headers = {}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.basic_header()
        log.debug("token request to %s for %s", realm, query.get("scope"))
        try:
            resp = client.get(realm_url.copy_merge_params(query), headers=headers)
        except httpx.HTTPError as e:
            raise AuthError(f"{where}: token request to {realm} failed: {e}") from e
        if resp.status_code in {401, 403}:
            who = f"user {self._credentials.username!r}" if self._credentials else "anonymous"
            raise AuthError(
                f"{where}: token server {realm} refused {who} (HTTP {resp.status_code}) for "
                f"scope {query.get('scope')!r}; check the credentials and their permissions"
            )
        if resp.status_code != 200 or len(resp.content) > MAX_TOKEN_RESPONSE:
            raise AuthError(f"{where}: token server {realm} answered HTTP {resp.status_code}")
        try:
            body = json.loads(resp.content)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError) as e:
            raise AuthError(f"{where}: token server {realm} sent no JSON object") from e
        if not isinstance(token, str) or not token:
            raise AuthError(f"{where}: token server {realm} sent no 'token' field")
        return token
