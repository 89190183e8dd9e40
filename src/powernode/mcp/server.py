"""``powernode mcp serve``: the operator's actions as MCP tools, on the official SDK.

Every tool is a call of the platform's REST API with the operator's token
(:class:`~powernode.client.OperatorClient`): the same service functions, scopes
and audit log as the REST API and the CLI, never a second implementation. What
a token may not do, its MCP session may not do either.

Safety, after kubernetes-mcp-server:

- **Read-only by default.** Without ``--allow-writes`` only the read tools are
  listed; a write tool called anyway is refused, and nothing changes.
- **Annotated.** Every tool says whether it only reads, whether it destroys,
  whether repeating it changes nothing, and whether it reaches outside the
  platform (the fleet).
- **Plan, then confirm.** A destructive or fleet-wide write (terminate, delete,
  promote to blessed/live, assign, unassign, change an assignment) first builds
  its plan from the platform's own reads — what changes, which templates and
  how many instances it reaches — and returns only that with ``dry_run=true``.
  Otherwise it asks the person through MCP elicitation and acts only on an
  explicit ``confirm: true``; a client that cannot ask, a decline or a cancel
  changes nothing.

No ``from __future__ import annotations`` here: the SDK evaluates each tool's
signature, and the resolvers its ``Annotated`` parameters name are local to
:func:`_register_writes`.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import httpx
from mcp.server.elicitation import AcceptedElicitation, DeclinedElicitation, ElicitationResult
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from powernode import __version__
from powernode.client import ApiError, JsonObject, OperatorClient, PlatformUnreachableError
from powernode.errors import ManifestError

log = logging.getLogger(__name__)

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


_T = TypeVar("_T")


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None
    transport: httpx.AsyncBaseTransport | None = None
    verify: bool | str = True

    def client(self) -> OperatorClient:
        return OperatorClient(self.url, self.token, self.transport, verify=self.verify)


async def _call(conn: Connection, fn: Callable[[OperatorClient], Awaitable[_T]]) -> _T:
    """Run ``fn`` with a client; the platform's refusal becomes the tool's error."""
    try:
        async with conn.client() as c:
            return await fn(c)
    except ApiError as e:
        raise ToolError(f"the platform refused: {e.status} {e.detail}") from e
    except PlatformUnreachableError as e:
        raise ToolError(str(e)) from e


Answer = ElicitationResult[Confirm]
_NOT_ASKED: Answer = DeclinedElicitation()


def _ask(plan: JsonObject) -> Elicit[Confirm]:
    """The confirmation request for ``plan``: sent mid-call to a handshake-era client,
    batched into an ``InputRequiredResult`` on 2026-07-28 (the SDK's resolvers pick)."""
    text = "powernode will do this:\n" + json.dumps(plan, indent=2, sort_keys=True)
    return Elicit(text + "\n\nCarry it out?", Confirm)


def _accepted(answer: Answer) -> bool:
    return isinstance(answer, AcceptedElicitation) and answer.data.confirm


def _not_done(plan: JsonObject, why: str) -> JsonObject:
    return {"done": False, "reason": why, "plan": plan}


def build_server(conn: Connection, *, allow_writes: bool = False) -> MCPServer:
    """The MCP server for one platform and one token."""
    server = MCPServer(
        name="powernode",
        version=__version__,
        instructions=(
            "Operate a powernode fleet: modules and their versions, promotion "
            "(built → staging → blessed → live → retired), templates and assignments, "
            "nodes, instances and drift. "
            + ("Writes are enabled; destructive and fleet-wide ones show their plan "
               "and ask for confirmation." if allow_writes else
               "This server is read-only (start it with --allow-writes to change things).")
        ),
    )  # fmt: skip

    # -- reads -----------------------------------------------------------------------

    @server.tool(annotations=READ)
    async def system_list_modules(category: str | None = None) -> JsonObject:
        """Modules in the catalog, optionally of one category (system-base, userland, …)."""
        result: JsonObject = await _call(
            conn, lambda c: c.get("/node_modules", category_slug=category)
        )
        return result

    @server.tool(annotations=READ)
    async def system_list_module_versions(module: str) -> JsonObject:
        """Every version of a module with its promotion state and digests."""
        result: JsonObject = await _call(conn, lambda c: c.get(f"/node_modules/{module}/versions"))
        return result

    @server.tool(annotations=READ)
    async def system_get_instance(instance_id: str) -> JsonObject:
        """One node instance: status, template, last heartbeat, running modules."""
        result: JsonObject = await _call(conn, lambda c: c.get(f"/node_instances/{instance_id}"))
        return result

    @server.tool(annotations=READ)
    async def system_drift_report(instance_id: str) -> JsonObject:
        """Desired vs running composefs digest of every module of an instance; drift: false
        when it runs what its template asks for."""
        result: JsonObject = await _call(
            conn, lambda c: c.get(f"/node_instances/{instance_id}/drift")
        )
        return result

    @server.tool(annotations=READ)
    async def system_template_composition(template: str) -> JsonObject:
        """A template's composition preview: the stack and which module wins each path."""
        result: JsonObject = await _call(
            conn, lambda c: c.get(f"/node_templates/{template}/composition")
        )
        return result

    @server.tool(annotations=READ)
    async def system_validate_module_manifest(manifest_yaml: str) -> JsonObject:
        """Validate a module's manifest.yaml text (schema, globs, dependencies), offline."""
        from powernode.core.manifest import parse_manifest  # noqa: PLC0415

        try:
            loaded = parse_manifest(manifest_yaml, filename="manifest.yaml")
        except ManifestError as e:
            return {"valid": False, "problems": [str(p) for p in e.problems]}
        return {
            "valid": True,
            "name": loaded.manifest.name,
            "warnings": [str(w) for w in loaded.warnings],
        }

    @server.tool(annotations=READ)
    async def list_gitea_workflow_runs(owner: str, repo: str) -> JsonObject:
        """The module builds reported by the Gitea repository ``owner/repo``: its
        module's ingest jobs (one per build webhook), newest first."""
        full = f"{owner}/{repo}"

        async def go(c: OperatorClient) -> JsonObject:
            modules = (await c.get("/node_modules")).get("modules", [])
            match = [m for m in modules if m.get("gitea_repo_full_name") == full]
            if not match:
                raise ToolError(f"no module is built from the Gitea repository {full}")
            name = match[0]["name"]
            ingests = (await c.get(f"/node_modules/{name}/ingests")).get("ingests", [])
            return {"module": name, "runs": ingests}

        result: JsonObject = await _call(conn, go)
        return result

    @server.resource("powernode://modules/{name}", mime_type="application/json")
    async def module_resource(name: str) -> str:
        """A module and its versions."""

        async def go(c: OperatorClient) -> JsonObject:
            module = await c.get(f"/node_modules/{name}")
            versions = await c.get(f"/node_modules/{name}/versions")
            return {**module, **versions}

        return json.dumps(await _call(conn, go), sort_keys=True)

    @server.resource("powernode://templates/{name}", mime_type="application/json")
    async def template_resource(name: str) -> str:
        """A template with its assignments."""
        return json.dumps(await _call(conn, lambda c: c.get(f"/node_templates/{name}")))

    @server.resource("powernode://instances/{instance_id}", mime_type="application/json")
    async def instance_resource(instance_id: str) -> str:
        """A node instance."""
        return json.dumps(await _call(conn, lambda c: c.get(f"/node_instances/{instance_id}")))

    if allow_writes:
        _register_writes(server, conn)
    return server


async def _templates_assigning(c: OperatorClient, module: str) -> list[str]:
    out = []
    for t in (await c.get("/node_templates")).get("templates", []):
        detail = (await c.get(f"/node_templates/{t['name']}")).get("template", {})
        if module in {a.get("module_name") for a in detail.get("assignments", [])}:
            out.append(str(t["name"]))
    return out


async def _instances_of(c: OperatorClient, template: str) -> int:
    try:
        return len((await c.get(f"/node_templates/{template}/drift")).get("instances", []))
    except ApiError:  # an unresolvable template still has its instances, uncounted here
        return -1


def _register_writes(server: MCPServer, conn: Connection) -> None:
    """The write tools. Each destructive or fleet-wide one has a resolver that builds
    its plan and asks for confirmation (none with ``dry_run``); the body acts only on
    an accepted ``confirm: true``."""

    async def guarded(
        dry_run: bool,
        answer: Answer,
        plan_fn: Callable[[OperatorClient], Awaitable[JsonObject]],
        act: Callable[[OperatorClient], Awaitable[JsonObject]],
    ) -> JsonObject:
        plan: JsonObject = await _call(conn, plan_fn)
        if dry_run:
            return _not_done(plan, "dry run")
        if not _accepted(answer):
            return _not_done(plan, "not confirmed")
        result: JsonObject = await _call(conn, act)
        return {"done": True, "plan": plan, "result": result}

    async def asking(
        dry_run: bool, plan_fn: Callable[[OperatorClient], Awaitable[JsonObject]]
    ) -> Elicit[Confirm] | Answer:
        if dry_run:
            return _NOT_ASKED
        return _ask(await _call(conn, plan_fn))

    @server.tool(annotations=CREATE)
    async def system_create_module_from_package(
        name: str,
        category_slug: str,
        *,
        variety: str = "subscription",
        description: str = "",
        gitea_repo_full_name: str | None = None,
        github_repo_full_name: str | None = None,
        cosign_public_key: str | None = None,
        require_approval: bool = False,
    ) -> JsonObject:
        """Register a module in the catalog; the answer carries its webhook secret, shown
        once (store it as the repository's POWERNODE_WEBHOOK_SECRET)."""
        body = {
            "name": name, "category_slug": category_slug, "variety": variety,
            "description": description, "gitea_repo_full_name": gitea_repo_full_name,
            "github_repo_full_name": github_repo_full_name,
            "cosign_public_key": cosign_public_key, "require_approval": require_approval,
        }  # fmt: skip
        result: JsonObject = await _call(
            conn,
            lambda c: c.post("/node_modules", {k: v for k, v in body.items() if v is not None}),
        )
        return result

    @server.tool(annotations=CREATE)
    async def system_create_node(
        hostname: str, template: str, metadata: JsonObject | None = None
    ) -> JsonObject:
        """Register a node (what the operator wants to run) on a template."""
        body = {"hostname": hostname, "node_template_id": template, "metadata": metadata or {}}
        result: JsonObject = await _call(conn, lambda c: c.post("/nodes", body))
        return result

    @server.tool(annotations=CREATE)
    async def system_provision_instance(node: str) -> JsonObject:
        """Provision an instance of a node (by hostname or id) through its provider."""
        result: JsonObject = await _call(
            conn, lambda c: c.post("/node_instances", {"node_id": node})
        )
        return result

    # -- promote -----------------------------------------------------------------------

    def promote_plan(version_id: str, to: str) -> Callable[[OperatorClient], Awaitable[JsonObject]]:
        async def plan(c: OperatorClient) -> JsonObject:
            v = (await c.get(f"/node_module_versions/{version_id}")).get("version", {})
            module = str(v.get("module_name", ""))
            return {
                "action": "promote",
                "version": version_id,
                "module": module,
                "version_string": v.get("version_string"),
                "from": v.get("promotion_state"),
                "to": to,
                "templates_assigning_the_module": await _templates_assigning(c, module),
            }

        return plan

    async def ask_promote(
        version_id: str, to: str, dry_run: bool = False
    ) -> Elicit[Confirm] | Answer:
        if to not in FLEET_STATES:
            return AcceptedElicitation(data=Confirm(confirm=True))  # reaches no node: no question
        return await asking(dry_run, promote_plan(version_id, to))

    @server.tool(annotations=FLEET)
    async def system_promote_module_version(
        version_id: str,
        to: str,
        answer: Annotated[Answer, Resolve(ask_promote)],
        note: str = "",
        dry_run: bool = False,
    ) -> JsonObject:
        """Promote a version (built → staging → blessed → live). Going blessed or live
        reaches nodes: the plan names the templates that assign the module, and it is
        carried out only when confirmed."""
        return await guarded(
            dry_run, answer, promote_plan(version_id, to),
            lambda c: c.post(f"/node_module_versions/{version_id}/promote",
                             {"to": to, "note": note}),
        )  # fmt: skip

    # -- assignments -------------------------------------------------------------------

    def assign_plan(
        template: str, module: str, effective_priority: int | None
    ) -> Callable[[OperatorClient], Awaitable[JsonObject]]:
        async def plan(c: OperatorClient) -> JsonObject:
            return {
                "action": "assign",
                "template": template,
                "module": module,
                "effective_priority": effective_priority,
                "instances_reached": await _instances_of(c, template),
            }

        return plan

    async def ask_assign(
        template: str, module: str, effective_priority: int | None = None, dry_run: bool = False
    ) -> Elicit[Confirm] | Answer:
        return await asking(dry_run, assign_plan(template, module, effective_priority))

    @server.tool(annotations=FLEET)
    async def system_assign_module_to_template(
        template: str,
        module: str,
        *,
        answer: Annotated[Answer, Resolve(ask_assign)],
        effective_priority: int | None = None,
        metadata: JsonObject | None = None,
        dry_run: bool = False,
    ) -> JsonObject:
        """Assign a module to a template: every instance of the template takes it at its
        next sync. Shows the plan and asks for confirmation first."""
        body: JsonObject = {"module_name": module, "metadata": metadata or {}}
        if effective_priority is not None:
            body["effective_priority"] = effective_priority
        return await guarded(
            dry_run, answer, assign_plan(template, module, effective_priority),
            lambda c: c.post(f"/node_templates/{template}/assignments", body),
        )  # fmt: skip

    def update_plan(
        assignment_id: str, change: JsonObject
    ) -> Callable[[OperatorClient], Awaitable[JsonObject]]:
        async def plan(c: OperatorClient) -> JsonObject:
            return {"action": "update-assignment", "assignment": assignment_id, "change": change}

        return plan

    def _change(effective_priority: int | None, metadata: JsonObject | None) -> JsonObject:
        body = {"effective_priority": effective_priority, "metadata": metadata}
        return {k: v for k, v in body.items() if v is not None}

    async def ask_update(
        assignment_id: str,
        effective_priority: int | None = None,
        metadata: JsonObject | None = None,
        dry_run: bool = False,
    ) -> Elicit[Confirm] | Answer:
        return await asking(
            dry_run, update_plan(assignment_id, _change(effective_priority, metadata))
        )

    @server.tool(annotations=FLEET)
    async def system_update_module_assignment(
        assignment_id: str,
        answer: Annotated[Answer, Resolve(ask_update)],
        effective_priority: int | None = None,
        metadata: JsonObject | None = None,
        dry_run: bool = False,
    ) -> JsonObject:
        """Change an assignment's priority override or metadata (the stack of every
        instance of its template may change). Shows the plan and asks first."""
        change = _change(effective_priority, metadata)
        return await guarded(
            dry_run, answer, update_plan(assignment_id, change),
            lambda c: c.patch(f"/node_module_assignments/{assignment_id}", change),
        )  # fmt: skip

    def unassign_plan(
        template: str, module: str
    ) -> Callable[[OperatorClient], Awaitable[JsonObject]]:
        async def plan(c: OperatorClient) -> JsonObject:
            return {
                "action": "unassign",
                "template": template,
                "module": module,
                "instances_reached": await _instances_of(c, template),
            }

        return plan

    async def ask_unassign(
        template: str, module: str, dry_run: bool = False
    ) -> Elicit[Confirm] | Answer:
        return await asking(dry_run, unassign_plan(template, module))

    @server.tool(annotations=FLEET)
    async def system_unassign_module_from_template(
        template: str,
        module: str,
        answer: Annotated[Answer, Resolve(ask_unassign)],
        dry_run: bool = False,
    ) -> JsonObject:
        """Remove a module from a template: its instances unmount it at their next sync.
        Shows the plan and asks first."""
        return await guarded(
            dry_run, answer, unassign_plan(template, module),
            lambda c: c.delete(f"/node_templates/{template}/assignments/{module}"),
        )  # fmt: skip

    # -- destructive -------------------------------------------------------------------

    def terminate_plan(instance_id: str) -> Callable[[OperatorClient], Awaitable[JsonObject]]:
        async def plan(c: OperatorClient) -> JsonObject:
            inst = (await c.get(f"/node_instances/{instance_id}")).get("instance", {})
            keep = ("id", "hostname", "status", "provider", "provider_ref")
            return {"action": "terminate", "instance": {k: inst.get(k) for k in keep}}

        return plan

    async def ask_terminate(instance_id: str, dry_run: bool = False) -> Elicit[Confirm] | Answer:
        return await asking(dry_run, terminate_plan(instance_id))

    @server.tool(annotations=DESTROY)
    async def system_terminate_instance(
        instance_id: str,
        answer: Annotated[Answer, Resolve(ask_terminate)],
        dry_run: bool = False,
    ) -> JsonObject:
        """Terminate an instance through its provider. Shows the instance and asks first."""
        return await guarded(
            dry_run, answer, terminate_plan(instance_id),
            lambda c: c.post(f"/node_instances/{instance_id}/terminate"),
        )  # fmt: skip

    def delete_plan(name: str) -> Callable[[OperatorClient], Awaitable[JsonObject]]:
        async def plan(c: OperatorClient) -> JsonObject:
            versions = (await c.get(f"/node_modules/{name}/versions")).get("versions", [])
            return {
                "action": "delete-module",
                "module": name,
                "versions": [
                    f"{v.get('version_string')} ({v.get('promotion_state')})" for v in versions
                ],
                "templates_assigning_the_module": await _templates_assigning(c, name),
            }

        return plan

    async def ask_delete(name: str, dry_run: bool = False) -> Elicit[Confirm] | Answer:
        return await asking(dry_run, delete_plan(name))

    @server.tool(annotations=DESTROY)
    async def system_delete_module(
        name: str,
        answer: Annotated[Answer, Resolve(ask_delete)],
        dry_run: bool = False,
    ) -> JsonObject:
        """Delete a module and its versions. Shows what goes and asks first; the platform
        refuses while a version is live or the module is assigned."""
        return await guarded(
            dry_run, answer, delete_plan(name), lambda c: c.delete(f"/node_modules/{name}")
        )
