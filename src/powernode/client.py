"""The operator's client of the platform's REST API (``/api/v1/system``).

Typed errors, never printing: a refusal is :class:`ApiError` with the status and
the problem's ``detail`` (RFC 9457), an unreachable platform is
:class:`PlatformUnreachableError`. The transport is the test seam (an
``httpx.MockTransport``, or ``httpx.ASGITransport`` around a real app).

Used by the MCP server; the CLI's ``system`` group and the demo's operator are
to move onto it (one client, issue 14).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from powernode.errors import PowernodeError, TransportError

API = "/api/v1/system"


class ApiError(PowernodeError):
    """The platform answered with an error status; ``detail`` says why."""

    def __init__(self, status: int, detail: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.problem = problem or {}


class PlatformUnreachableError(TransportError):
    """No answer from the platform (refused, timed out, TLS failed)."""


@dataclass
class OperatorClient:
    url: str
    token: str | None
    transport: httpx.AsyncBaseTransport | None = None
    timeout: float = 30.0
    verify: bool | str = True
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> OperatorClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._client = httpx.AsyncClient(
            base_url=self.url.rstrip("/"),
            transport=self.transport,
            timeout=self.timeout,
            headers=headers,
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
        body: Any = None,
        params: dict[str, Any] | None = None,
        prefix: str = API,
    ) -> dict[str, Any]:
        if self._client is None:
            raise RuntimeError("OperatorClient used outside 'async with'")
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = await self._client.request(method, prefix + path, json=body, params=query)
        except httpx.HTTPError as e:
            raise PlatformUnreachableError(
                f"cannot reach the platform at {self.url}: {e or type(e).__name__}"
            ) from e
        if r.is_error:
            try:
                problem = r.json()
                detail = str(problem.get("detail", r.text))
            except ValueError:
                problem, detail = None, r.text[:500]
            raise ApiError(r.status_code, detail, problem)
        if not r.content:
            return {}
        data = r.json()
        return data if isinstance(data, dict) else {"items": data}

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None) -> dict[str, Any]:
        return await self.request("POST", path, body=body if body is not None else {})

    async def patch(self, path: str, body: Any) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body)

    async def delete(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.request("DELETE", path, params=params)
