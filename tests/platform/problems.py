"""Assertions shared by the platform tests."""

from __future__ import annotations

from typing import Any

from httpx import Response


def assert_problem(resp: Response, status: int, *fragments: str) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with ``status`` whose detail says each fragment."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    for f in fragments:
        assert f in body["detail"], (f, body["detail"])
    return body
