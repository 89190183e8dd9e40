"""Refuse request bodies over ``max_body_bytes`` before anything parses them.

A pure ASGI middleware: a declared ``Content-Length`` over the limit is
refused at once; otherwise the body is read (at most limit + 1 bytes, so a
chunked upload cannot exceed it either) and replayed to the app.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powernode.platform.problems import PROBLEM_CONTENT_TYPE, PayloadTooLargeError

log = logging.getLogger(__name__)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max:
            await self._refuse(scope, send, declared)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max:
                await self._refuse(scope, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else "more than that"
        err = PayloadTooLargeError(
            f"request body is {size}; the limit is {self.max} bytes (max_body_bytes setting)",
            max_body_bytes=self.max,
        )
        log.warning("refused %s %s: %s", scope["method"], scope["path"], err.detail)
        payload = json.dumps(err.problem(scope["path"])).encode()
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def content_length(scope: Scope) -> int | None:
    """The request's declared Content-Length; None when absent or not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
