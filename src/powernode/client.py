"""The operator's client of the platform's REST API (``/api/v1/system``).

One client with two faces over one core, the way httpx's own ``Client`` and
``AsyncClient`` share ``BaseClient`` (docs/decisions.md "One operator
client"): :class:`OperatorClient` (async: the MCP server) and
:class:`SyncOperatorClient` (blocking: the ``powernode system`` commands and
the demo). Everything but the I/O is shared: the URL, the token header, the
query (``None`` values left out), and what an answer means. Typed errors,
never printing: a refusal is :class:`ApiError` with the status, reason and
the problem's ``detail`` (RFC 9457); an unreachable platform is
:class:`PlatformUnreachableError`. The transport is the test seam (an
``httpx.MockTransport``, or a transport into a real app).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from powernode.errors import PowernodeError, TransportError

__all__ = [
    "API",
    "ApiError",
    "JsonObject",
    "OperatorClient",
    "PlatformUnreachableError",
    "SyncOperatorClient",
]

API = "/api/v1/system"
DEFAULT_TIMEOUT = 30.0

# One JSON object (an API answer, a command's --json output). Its callers read
# it by key into tables, follow-up calls and checks; the API's OpenAPI types it.
JsonObject = dict[str, Any]  # Any: a JSON object's values, read by key by each caller
Scalar = str | int | float | bool | None
QueryValue = Scalar | Sequence[Scalar]  # a list repeats the key (?a=1&a=2)
Params = Mapping[str, QueryValue] | None
Verify = ssl.SSLContext | bool | str


class ApiError(PowernodeError):
    """The platform answered with an error status; ``detail`` says why."""

    def __init__(
        self,
        status: int,
        detail: str,
        problem: Mapping[str, object] | None = None,
        *,
        reason: str = "",
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.problem = dict(problem or {})
        self.reason = reason  # the HTTP reason phrase, e.g. "Conflict"
        self.method = method
        self.path = path  # under the API prefix, e.g. /node_modules


class PlatformUnreachableError(TransportError):
    """No answer from the platform (refused, timed out, TLS failed)."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"cannot reach the platform at {url}: {cause}")
        self.url = url
        self.cause = cause


def _query(params: Params) -> dict[str, QueryValue]:
    return {k: v for k, v in (params or {}).items() if v is not None}


def _unreachable(url: str, e: httpx.HTTPError) -> PlatformUnreachableError:
    return PlatformUnreachableError(url, str(e) or type(e).__name__)


def answer(method: str, path: str, r: httpx.Response) -> JsonObject:
    """What the API's response means: its JSON object, or :class:`ApiError`."""
    if r.is_error:
        try:
            problem = r.json()
        except ValueError:
            problem = None
        if isinstance(problem, dict):
            detail = str(problem.get("detail", r.text))
        else:
            problem, detail = None, r.text[:500]
        raise ApiError(
            r.status_code, detail, problem, reason=r.reason_phrase, method=method, path=path
        )
    if not r.content:
        return {}
    try:
        data = r.json()
    except ValueError as e:
        raise ApiError(
            r.status_code,
            f"answer is not JSON: {e}",
            reason=r.reason_phrase,
            method=method,
            path=path,
        ) from e
    return data if isinstance(data, dict) else {"items": data}


class _Base:
    """What both faces share: where the platform is and how to authenticate."""

    def __init__(
        self, url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT, verify: Verify
    ) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.verify = verify

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _base_url(self) -> str:
        return self.url.rstrip("/")


class OperatorClient(_Base):
    """The async face (``async with``): the MCP server's."""

    def __init__(
        self,
        url: str,
        token: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        verify: Verify = True,
    ) -> None:
        super().__init__(url, token, timeout=timeout, verify=verify)
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> OperatorClient:
        self._client = httpx.AsyncClient(
            base_url=self._base_url(),
            transport=self.transport,
            timeout=self.timeout,
            headers=self._headers(),
            verify=self.verify,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Params = None,
        prefix: str = API,
    ) -> JsonObject:
        if self._client is None:
            raise RuntimeError("OperatorClient used outside 'async with'")
        try:
            r = await self._client.request(method, prefix + path, json=body, params=_query(params))
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from e
        return answer(method, path, r)

    async def get(self, path: str, **params: QueryValue) -> JsonObject:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: object = None) -> JsonObject:
        return await self.request("POST", path, body=body if body is not None else {})

    async def patch(self, path: str, body: object) -> JsonObject:
        return await self.request("PATCH", path, body=body)

    async def delete(self, path: str, **params: QueryValue) -> JsonObject:
        return await self.request("DELETE", path, params=params)


class SyncOperatorClient(_Base):
    """The blocking face: the CLI (one call per client) and the demo (one client per run).

    Usable with ``with`` or closed by :meth:`close`; the connection pool opens
    on the first request.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        transport: httpx.BaseTransport | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        verify: Verify = True,
    ) -> None:
        super().__init__(url, token, timeout=timeout, verify=verify)
        self.transport = transport
        self._client: httpx.Client | None = None

    def __enter__(self) -> SyncOperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self._base_url(),
                transport=self.transport,
                timeout=self.timeout,
                verify=self.verify,
            )
        return self._client

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Params = None,
        prefix: str = API,
    ) -> JsonObject:
        """One call with the token; ``body`` None sends no body."""
        try:
            r = self._http().request(
                method, prefix + path, json=body, params=_query(params), headers=self._headers()
            )
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from e
        return answer(method, path, r)

    def get_text(self, path: str, *, params: Params = None, prefix: str = API) -> str:
        """A GET whose answer is text (an instance's console); refusals as :class:`ApiError`."""
        try:
            r = self._http().get(prefix + path, params=_query(params), headers=self._headers())
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from e
        if r.is_error:
            answer("GET", path, r)
        return r.text

    def post_raw(
        self, path: str, content: bytes, headers: Mapping[str, str], *, prefix: str = API
    ) -> JsonObject:
        """POST ``content`` as is, with ``headers`` and without the token (a signed webhook)."""
        try:
            r = self._http().post(prefix + path, content=content, headers=dict(headers))
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from e
        return answer("POST", path, r)

    def get(self, path: str, **params: QueryValue) -> JsonObject:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: object = None) -> JsonObject:
        return self.request("POST", path, body=body if body is not None else {})

    def patch(self, path: str, body: object) -> JsonObject:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str, **params: QueryValue) -> JsonObject:
        return self.request("DELETE", path, params=params)
