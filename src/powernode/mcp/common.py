"""What the MCP server's reads and writes share: the tool annotations, the platform
connection, the call that turns a refusal into a tool error, the confirmation
question, and the server that audits every call.

**Every call audited.** :class:`AuditedServer` records each tool call and
resource read under the token's identity (``POST /audit_log/calls``, the
audit service) *before* it runs; a call that cannot be recorded is refused
and does nothing. A write the call leads to is recorded again by its own
service, as from the REST API. Without a token there is no identity and no
platform call: only the offline tool (``system_validate_module_manifest``)
works, and it is logged locally.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from mcp.server.elicitation import AcceptedElicitation, DeclinedElicitation, ElicitationResult
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.resolve import Elicit
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import AnyUrl, BaseModel, Field, JsonValue

from powernode.client import ApiError, OperatorClient, PlatformUnreachableError

log = logging.getLogger(__name__)

Doc = dict[str, JsonValue]
"""A JSON object: what every tool returns and every plan is."""
T = TypeVar("T")

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                       open_world_hint=False)  # fmt: skip
# A write that adds (a module, a node): not destructive, not idempotent (a second call
# is refused as a duplicate), inside the platform.
CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                         open_world_hint=False)  # fmt: skip
# Reaches the fleet: every node of the templates concerned changes at its next sync.
FLEET = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                        open_world_hint=True)  # fmt: skip
# Promotions to these states reach nodes (test nodes, then the fleet).
FLEET_STATES = frozenset({"blessed", "live"})
DESTROY = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                          open_world_hint=True)  # fmt: skip


class Confirm(BaseModel):
    """What the person answers to a plan."""

    confirm: bool = Field(description="true to carry out the plan shown; false to leave it")


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None
    transport: httpx.AsyncBaseTransport | None = None
    verify: bool | str = True

    def client(self) -> OperatorClient:
        return OperatorClient(self.url, self.token, self.transport, verify=self.verify)


async def call(conn: Connection, fn: Callable[[OperatorClient], Awaitable[T]]) -> T:
    """Run ``fn`` with a client; the platform's refusal becomes the tool's error."""
    try:
        async with conn.client() as c:
            return await fn(c)
    except ApiError as e:
        raise ToolError(f"the platform refused: {e.status} {e.detail}") from e
    except PlatformUnreachableError as e:
        raise ToolError(str(e)) from e


Answer = ElicitationResult[Confirm]
NOT_ASKED: Answer = DeclinedElicitation()


def ask(plan: Doc) -> Elicit[Confirm]:
    """The confirmation request for ``plan``: sent mid-call to a handshake-era client,
    batched into an ``InputRequiredResult`` on 2026-07-28 (the SDK's resolvers pick)."""
    text = "powernode will do this:\n" + json.dumps(plan, indent=2, sort_keys=True)
    return Elicit(text + "\n\nCarry it out?", Confirm)


def accepted(answer: Answer) -> bool:
    return isinstance(answer, AcceptedElicitation) and answer.data.confirm


def not_done(plan: Doc, why: str) -> Doc:
    return {"done": False, "reason": why, "plan": plan}


async def audit_call(conn: Connection, kind: str, name: str, arguments: Doc) -> None:
    """Record the call under the token's identity; refuse it when that fails."""
    if conn.token is None:
        log.info("mcp %s %s without a token: not recorded on the platform", kind, name)
        return
    body: Doc = {"via": "mcp", "kind": kind, "name": name[:255], "arguments": arguments}
    await call(conn, lambda c: c.post("/audit_log/calls", body))


class AuditedServer(MCPServer[object]):
    """The SDK's server, recording every tool call and resource read first."""

    def __init__(self, conn: Connection, **kw: Any) -> None:  # Any: MCPServer's keywords
        super().__init__(**kw)
        self._conn = conn

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],  # Any: the SDK's signature, overridden
        context: Context[object, Any] | None = None,  # Any: the SDK's own parameter
    ) -> CallToolResult | InputRequiredResult:
        await audit_call(self._conn, "tool", name, dict(arguments))
        return await super().call_tool(name, arguments, context)

    async def read_resource(
        self,
        uri: AnyUrl | str,
        context: Context[object, Any] | None = None,  # Any: the SDK's own parameter
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        try:
            await audit_call(self._conn, "resource", str(uri), {})
        except ToolError as e:
            raise ResourceError(str(e)) from e
        return await super().read_resource(uri, context)
