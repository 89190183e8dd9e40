"""The MCP server, driven by the SDK's own client, against a real platform app.

The platform runs in this process behind httpx's ASGI transport (the platform
fixture, SQLite and PostgreSQL); the MCP server calls its REST API with a token
as it would over the network.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from sqlalchemy import select

from powernode.mcp.server import Connection, build_server
from powernode.platform.db import AuditLogEntry
from powernode.platform.db.base import Base
from tests.platform.conftest import Platform
from tests.platform.test_drift import instance
from tests.platform.test_preview import assign, publish
from tests.platform.test_webhooks import create_module, deliver

READS = {
    "system_list_modules",
    "system_list_module_versions",
    "system_get_instance",
    "system_drift_report",
    "system_template_composition",
    "system_validate_module_manifest",
    "list_gitea_workflow_runs",
}
WRITES = {
    "system_create_module_from_package",
    "system_create_node",
    "system_provision_instance",
    "system_promote_module_version",
    "system_assign_module_to_template",
    "system_update_module_assignment",
    "system_unassign_module_from_template",
    "system_terminate_instance",
    "system_delete_module",
}
CONFIRMED = {
    "system_assign_module_to_template",
    "system_update_module_assignment",
    "system_unassign_module_from_template",
    "system_terminate_instance",
    "system_delete_module",
}

Answer = Callable[[Any, types.ElicitRequestParams], Awaitable[types.ElicitResult]]


def answering(confirm: bool | None, asked: list[str]) -> Answer:
    """An elicitation callback: accept with ``confirm``, or decline when None."""

    async def answer(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        if confirm is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"confirm": confirm})

    return answer


def session(
    p: Platform,
    body: Callable[[Client], Awaitable[Any]],
    *,
    writes: bool = False,
    role: str = "admin",
    elicitation: Answer | None = None,
) -> Any:
    conn = Connection("http://platform.test", p.tokens[role], httpx.ASGITransport(app=p.app))
    server = build_server(conn, allow_writes=writes)

    async def go() -> Any:
        async with Client(server, elicitation_callback=elicitation) as client:
            return await body(client)

    return anyio.run(go)


def fleet(p: Platform) -> dict[str, list[tuple[Any, ...]]]:
    """Every row but the audit log's records of MCP calls themselves (each call, a
    refused one too, is recorded before it runs): equal means the call changed nothing."""
    snap = p.snapshot()
    with p.engine.connect() as c:
        calls = {str(i) for i in c.scalars(
            select(AuditLogEntry.id).where(AuditLogEntry.action.like("mcp.%"))
        )}  # fmt: skip
    at = list(Base.metadata.tables["audit_log"].columns.keys()).index("id")
    snap["audit_log"] = [r for r in snap["audit_log"] if r[at] not in calls]
    return snap


def calls(p: Platform) -> list[dict[str, Any]]:
    """The audit log's records of MCP calls, newest first."""
    entries = p.call("GET", "/audit_log", role="read", params={"limit": 200}).json()["audit_log"]
    return [e for e in entries if e["action"].startswith("mcp.")]


def payload(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return dict(result.structured_content)
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    data: dict[str, Any] = json.loads(text.text)
    return data


def error_text(result: types.CallToolResult) -> str:
    assert result.is_error
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.fixture
def stack(platform: Platform) -> Platform:
    publish(
        platform, "system-base", category="system-base", files=["/etc/os-release"], state="live"
    )
    publish(
        platform, "my-redis", files=["/etc/redis.conf"], requires=["acme/system-base"], state="live"
    )
    assign(platform, "base", "my-redis")
    return platform


def test_read_only_lists_only_read_tools_all_annotated(stack: Platform) -> None:
    tools = session(stack, lambda c: c.list_tools()).tools
    assert {t.name for t in tools} == READS
    for t in tools:
        assert t.annotations is not None, t.name
        assert t.annotations.read_only_hint is True, t.name
        assert t.annotations.destructive_hint is False, t.name
        assert t.description, t.name


def test_with_writes_every_tool_is_annotated(stack: Platform) -> None:
    tools = {t.name: t for t in session(stack, lambda c: c.list_tools(), writes=True).tools}
    assert set(tools) == READS | WRITES
    for name in WRITES:
        a = tools[name].annotations
        assert a is not None and a.read_only_hint is False, name
        for hint in (a.destructive_hint, a.idempotent_hint, a.open_world_hint):
            assert hint is not None, name
    for name in CONFIRMED:
        assert tools[name].annotations.destructive_hint is True, name  # type: ignore[union-attr]


def test_read_only_refuses_writes_and_changes_nothing(stack: Platform) -> None:
    before = fleet(stack)
    result = session(stack, lambda c: c.call_tool("system_delete_module", {"name": "my-redis"}))
    assert result.is_error
    assert "system_delete_module" in error_text(result)
    assert fleet(stack) == before


def test_reads_answer_what_rest_answers(stack: Platform) -> None:
    iid = instance(stack, "redis-1")
    got = payload(
        session(stack, lambda c: c.call_tool("system_drift_report", {"instance_id": iid}))
    )
    rest = stack.call("GET", f"/node_instances/{iid}/drift", role="read").json()
    assert got == rest
    versions = payload(
        session(stack, lambda c: c.call_tool("system_list_module_versions", {"module": "my-redis"}))
    )
    assert versions == stack.call("GET", "/node_modules/my-redis/versions").json()


def test_validate_manifest_reports_problems() -> None:
    server = build_server(Connection("http://unused.invalid", None))

    async def go() -> tuple[Any, Any]:
        async with Client(server) as c:
            bad = await c.call_tool(
                "system_validate_module_manifest", {"manifest_yaml": "name: x\nfile_spec: [1]\n"}
            )
            good = await c.call_tool(
                "system_validate_module_manifest",
                {"manifest_yaml": "name: hello\nversion: 1.0.0\ncategory: userland\n"},
            )
            return bad, good

    bad, good = anyio.run(go)
    assert payload(bad)["valid"] is False and payload(bad)["problems"]
    assert "valid" in payload(good)


@pytest.mark.parametrize("answer", [None, False], ids=["declined", "confirm-false"])
def test_destructive_call_without_confirmation_changes_nothing(
    stack: Platform, answer: bool | None
) -> None:
    iid = instance(stack, "redis-1")
    before = fleet(stack)
    asked: list[str] = []
    got = payload(
        session(
            stack,
            lambda c: c.call_tool("system_terminate_instance", {"instance_id": iid}),
            writes=True,
            elicitation=answering(answer, asked),
        )
    )
    assert got["done"] is False
    assert got["plan"]["instance"]["hostname"] == "redis-1"
    assert len(asked) == 1 and "terminate" in asked[0] and "redis-1" in asked[0]
    assert fleet(stack) == before


def test_a_client_that_cannot_confirm_changes_nothing(stack: Platform) -> None:
    """No elicitation capability: the call is refused before the tool acts."""
    before = fleet(stack)
    with pytest.raises(BaseExceptionGroup) as raised:  # the SDK's task group wraps it
        session(
            stack,
            lambda c: c.call_tool("system_delete_module", {"name": "my-redis"}),
            writes=True,
        )
    assert raised.group_contains(MCPError, match="elicitation capability", depth=None)
    assert fleet(stack) == before


def test_dry_run_shows_the_plan_and_changes_nothing(stack: Platform) -> None:
    instance(stack, "redis-1")
    instance(stack, "redis-2")
    before = fleet(stack)
    got = payload(
        session(
            stack,
            lambda c: c.call_tool(
                "system_unassign_module_from_template",
                {"template": "base", "module": "my-redis", "dry_run": True},
            ),
            writes=True,
        )
    )
    assert got["done"] is False and got["reason"] == "dry run"
    assert got["plan"]["instances_reached"] == 2
    assert fleet(stack) == before


def test_confirmed_call_does_what_rest_does(stack: Platform) -> None:
    via_mcp = instance(stack, "redis-1")
    via_rest = instance(stack, "redis-2")
    got = payload(
        session(
            stack,
            lambda c: c.call_tool("system_terminate_instance", {"instance_id": via_mcp}),
            writes=True,
            elicitation=answering(True, []),
        )
    )
    assert got["done"] is True
    rest = stack.call("POST", f"/node_instances/{via_rest}/terminate").json()
    strip = {"id", "hostname", "node_id", "created_at", "terminated_at", "provider_ref"}

    def same(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d["instance"].items() if k not in strip}

    assert same(got["result"]) == same(rest)
    assert got["result"]["instance"]["status"] == rest["instance"]["status"]
    # Audited under the token's identity, as the REST call is.
    audit = stack.call("GET", "/audit_log", role="read", params={"limit": 50}).json()["audit_log"]
    mine = [e for e in audit if via_mcp in json.dumps(e)]
    assert mine and all(e["actor"] == "admin" for e in mine)


def test_the_token_scopes_hold_through_mcp(stack: Platform) -> None:
    before = fleet(stack)
    result = session(
        stack,
        lambda c: c.call_tool("system_create_node", {"hostname": "n9", "template": "base"}),
        writes=True,
        role="read",
    )
    assert "403" in error_text(result)
    assert fleet(stack) == before


def test_resources(stack: Platform) -> None:
    async def body(c: Client) -> Any:
        templates = await c.list_resource_templates()
        read = await c.read_resource("powernode://modules/my-redis")
        return templates, read

    templates, read = session(stack, body)
    uris = {t.uri_template for t in templates.resource_templates}
    assert uris == {
        "powernode://modules/{name}",
        "powernode://templates/{name}",
        "powernode://instances/{instance_id}",
    }
    doc = json.loads(read.contents[0].text)
    assert doc["module"]["name"] == "my-redis"
    assert [v["version_string"] for v in doc["versions"]] == ["1.0.0"]


def test_every_call_is_audited_under_the_token_reads_too(stack: Platform) -> None:
    iid = instance(stack, "redis-1")
    before = len(calls(stack))
    payload(
        session(stack, lambda c: c.call_tool("system_drift_report", {"instance_id": iid}),
                role="read")
    )  # fmt: skip
    mine = calls(stack)
    assert len(mine) == before + 1
    entry = mine[0]
    assert (entry["actor"], entry["action"], entry["target_id"]) == (
        "read", "mcp.tool", "system_drift_report"
    )  # fmt: skip
    assert entry["detail"]["arguments"] == {"instance_id": iid}
    assert entry["token_id"]
    # A resource read too, and a refused write (read-only mode): recorded, nothing else.
    session(stack, lambda c: c.read_resource("powernode://modules/my-redis"))
    assert calls(stack)[0]["action"] == "mcp.resource"
    assert calls(stack)[0]["target_id"] == "powernode://modules/my-redis"
    session(stack, lambda c: c.call_tool("system_delete_module", {"name": "my-redis"}))
    assert calls(stack)[0]["target_id"] == "system_delete_module"


def test_a_call_that_cannot_be_audited_is_refused(stack: Platform) -> None:
    before = fleet(stack)
    stack.tokens["bogus"] = "pnt_not-a-real-token"
    result = session(stack, lambda c: c.call_tool("system_list_modules", {}), role="bogus")
    assert "401" in error_text(result)
    assert fleet(stack) == before and calls(stack) == []


def test_workflow_runs_are_the_deliveries_and_ingests(platform: Platform) -> None:
    secret = create_module(platform, gitea_repo_full_name="acme/my-redis-module")
    deliver(platform, {"repository": {"full_name": "acme/my-redis-module"}, "tag": "v1.0.0"},
            secret)  # fmt: skip
    got = payload(
        session(
            platform,
            lambda c: c.call_tool(
                "list_gitea_workflow_runs", {"owner": "acme", "repo": "my-redis-module"}
            ),
        )
    )
    assert got["module"] == "my-redis"
    assert [(d["delivery_id"], d["status"]) for d in got["deliveries"]] == [("d-1", "queued")]
    assert [(r["tag"], r["state"]) for r in got["runs"]] == [("v1.0.0", "queued")]
