"""The MCP server's write tools (``--allow-writes``): each destructive or fleet-wide
one has a resolver that builds its plan and asks for confirmation (none with
``dry_run``); the body acts only on an accepted ``confirm: true``.

No ``from __future__ import annotations`` here: the SDK evaluates each tool's
signature, and the resolvers its ``Annotated`` parameters name are local to
:func:`register_writes`.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeAlias

from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import JsonValue

from powernode.client import ApiError, OperatorClient
from powernode.mcp.common import (
    CREATE,
    DESTROY,
    FLEET,
    FLEET_STATES,
    NOT_ASKED,
    Answer,
    Confirm,
    Connection,
    Doc,
    accepted,
    ask,
    call,
    not_done,
)

Plan: TypeAlias = Callable[[OperatorClient], Awaitable[Doc]]


async def _templates_assigning(c: OperatorClient, module: str) -> list[JsonValue]:
    out: list[JsonValue] = []
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


def register_writes(server: MCPServer[object], conn: Connection) -> None:
    """The write tools. Each destructive or fleet-wide one has a resolver that builds
    its plan and asks for confirmation (none with ``dry_run``); the body acts only on
    an accepted ``confirm: true``."""

    async def guarded(
        dry_run: bool,
        answer: Answer,
        plan_fn: Plan,
        act: Plan,
    ) -> Doc:
        plan: Doc = await call(conn, plan_fn)
        if dry_run:
            return not_done(plan, "dry run")
        if not accepted(answer):
            return not_done(plan, "not confirmed")
        result: Doc = await call(conn, act)
        return {"done": True, "plan": plan, "result": result}

    async def asking(dry_run: bool, plan_fn: Plan) -> Elicit[Confirm] | Answer:
        if dry_run:
            return NOT_ASKED
        return ask(await call(conn, plan_fn))

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
    ) -> Doc:
        """Register a module in the catalog; the answer carries its webhook secret, shown
        once (store it as the repository's POWERNODE_WEBHOOK_SECRET)."""
        body = {
            "name": name, "category_slug": category_slug, "variety": variety,
            "description": description, "gitea_repo_full_name": gitea_repo_full_name,
            "github_repo_full_name": github_repo_full_name,
            "cosign_public_key": cosign_public_key, "require_approval": require_approval,
        }  # fmt: skip
        result: Doc = await call(
            conn,
            lambda c: c.post("/node_modules", {k: v for k, v in body.items() if v is not None}),
        )
        return result

    @server.tool(annotations=CREATE)
    async def system_create_node(hostname: str, template: str, metadata: Doc | None = None) -> Doc:
        """Register a node (what the operator wants to run) on a template."""
        body = {"hostname": hostname, "node_template_id": template, "metadata": metadata or {}}
        result: Doc = await call(conn, lambda c: c.post("/nodes", body))
        return result

    @server.tool(annotations=CREATE)
    async def system_provision_instance(node: str) -> Doc:
        """Provision an instance of a node (by hostname or id) through its provider."""
        result: Doc = await call(conn, lambda c: c.post("/node_instances", {"node_id": node}))
        return result

    # -- promote -----------------------------------------------------------------------

    def promote_plan(version_id: str, to: str) -> Plan:
        async def plan(c: OperatorClient) -> Doc:
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
    ) -> Doc:
        """Promote a version (built → staging → blessed → live). Going blessed or live
        reaches nodes: the plan names the templates that assign the module, and it is
        carried out only when confirmed."""
        return await guarded(
            dry_run, answer, promote_plan(version_id, to),
            lambda c: c.post(f"/node_module_versions/{version_id}/promote",
                             {"to": to, "note": note}),
        )  # fmt: skip

    # -- assignments -------------------------------------------------------------------

    def assign_plan(template: str, module: str, effective_priority: int | None) -> Plan:
        async def plan(c: OperatorClient) -> Doc:
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
        metadata: Doc | None = None,
        dry_run: bool = False,
    ) -> Doc:
        """Assign a module to a template: every instance of the template takes it at its
        next sync. Shows the plan and asks for confirmation first."""
        body: Doc = {"module_name": module, "metadata": metadata or {}}
        if effective_priority is not None:
            body["effective_priority"] = effective_priority
        return await guarded(
            dry_run, answer, assign_plan(template, module, effective_priority),
            lambda c: c.post(f"/node_templates/{template}/assignments", body),
        )  # fmt: skip

    def update_plan(assignment_id: str, change: Doc) -> Plan:
        async def plan(c: OperatorClient) -> Doc:
            return {"action": "update-assignment", "assignment": assignment_id, "change": change}

        return plan

    def _change(effective_priority: int | None, metadata: Doc | None) -> Doc:
        body = {"effective_priority": effective_priority, "metadata": metadata}
        return {k: v for k, v in body.items() if v is not None}

    async def ask_update(
        assignment_id: str,
        effective_priority: int | None = None,
        metadata: Doc | None = None,
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
        metadata: Doc | None = None,
        dry_run: bool = False,
    ) -> Doc:
        """Change an assignment's priority override or metadata (the stack of every
        instance of its template may change). Shows the plan and asks first."""
        change = _change(effective_priority, metadata)
        return await guarded(
            dry_run, answer, update_plan(assignment_id, change),
            lambda c: c.patch(f"/node_module_assignments/{assignment_id}", change),
        )  # fmt: skip

    def unassign_plan(template: str, module: str) -> Plan:
        async def plan(c: OperatorClient) -> Doc:
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
    ) -> Doc:
        """Remove a module from a template: its instances unmount it at their next sync.
        Shows the plan and asks first."""
        return await guarded(
            dry_run, answer, unassign_plan(template, module),
            lambda c: c.delete(f"/node_templates/{template}/assignments/{module}"),
        )  # fmt: skip

    # -- destructive -------------------------------------------------------------------

    def terminate_plan(instance_id: str) -> Plan:
        async def plan(c: OperatorClient) -> Doc:
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
    ) -> Doc:
        """Terminate an instance through its provider. Shows the instance and asks first."""
        return await guarded(
            dry_run, answer, terminate_plan(instance_id),
            lambda c: c.post(f"/node_instances/{instance_id}/terminate"),
        )  # fmt: skip

    def delete_plan(name: str) -> Plan:
        async def plan(c: OperatorClient) -> Doc:
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
    ) -> Doc:
        """Delete a module and its versions. Shows what goes and asks first; the platform
        refuses while a version is live or the module is assigned."""
        return await guarded(
            dry_run, answer, delete_plan(name), lambda c: c.delete(f"/node_modules/{name}")
        )
