"""The batched live-identity read answers each request with a read begun after it arrived."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
from sqlalchemy import event, text

from powernode.platform.services.nodeapi.identity_batch import LiveIdentityReader
from tests.platform.nodeapi.conftest import NodePlatform


def test_a_request_arriving_during_a_read_waits_for_the_next(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    engine = p.state.engine
    reading, go_on = threading.Event(), threading.Event()
    reads: list[str] = []

    def after(*args: Any) -> None:
        if "node_instances" in args[2] and ("IN" in args[2] or "ANY(" in args[2]):
            reads.append(args[2])
            if len(reads) == 1:
                reading.set()
                go_on.wait(10)

    async def scenario() -> tuple[Any, Any, Any]:
        reader = LiveIdentityReader(engine)
        first = asyncio.ensure_future(reader.get(creds.instance_id))
        await anyio.to_thread.run_sync(reading.wait, 10)
        # Revoked while the first read is under way, before the second request.
        with p.engine.begin() as c:
            c.execute(text("UPDATE node_instances SET cert_serial = NULL"))
        second = asyncio.ensure_future(reader.get(creds.instance_id))
        third = asyncio.ensure_future(reader.get(creds.instance_id))
        await asyncio.sleep(0.05)
        go_on.set()
        return await first, await second, await third

    event.listen(engine, "after_cursor_execute", after)
    try:
        first, second, third = asyncio.run(scenario())
    finally:
        event.remove(engine, "after_cursor_execute", after)
    assert first.cert_serial == creds.serial  # read before the revocation
    assert second.cert_serial is None and third.cert_serial is None
    assert len(reads) == 2  # the two late requests shared one read


def test_an_unknown_instance_reads_as_none(node_platform: NodePlatform) -> None:
    reader = LiveIdentityReader(node_platform.state.engine)
    assert asyncio.run(reader.get("00000000-0000-4000-8000-000000000000")) is None
