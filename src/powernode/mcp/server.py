"""``powernode mcp serve``: the operator's actions as MCP tools, on the official SDK.

Every tool is a call of the platform's REST API with the operator's token
(:class:`~powernode.client.OperatorClient`): the same service functions, scopes
and audit log as the REST API and the CLI, never a second implementation. What
a token may not do, its MCP session may not do either; and every call, reads
included, is recorded in the audit log under the token's identity before it
runs (:class:`~powernode.mcp.common.AuditedServer`).

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
  changes nothing (mcp/writes.py).
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from powernode import __version__
from powernode.client import OperatorClient
from powernode.errors import ManifestError
from powernode.mcp.common import READ, AuditedServer, Connection, Doc, call
from powernode.mcp.writes import register_writes

__all__ = ["Connection", "build_server"]


def build_server(conn: Connection, *, allow_writes: bool = False) -> MCPServer[object]:
    """The MCP server for one platform and one token."""
    server = AuditedServer(
        conn,
        name="powernode",
        version=__version__,
        instructions=(
            "Operate a powernode fleet: modules and their versions, promotion "
            "(built → staging → blessed → live → retired), templates and assignments, "
            "nodes, instances and drift. Every call is recorded in the platform's audit "
            "log under your token. "
            + ("Writes are enabled; destructive and fleet-wide ones show their plan "
               "and ask for confirmation." if allow_writes else
               "This server is read-only (start it with --allow-writes to change things).")
        ),
    )  # fmt: skip

    # -- reads -----------------------------------------------------------------------

    @server.tool(annotations=READ)
    async def system_list_modules(category: str | None = None) -> Doc:
        """Modules in the catalog, optionally of one category (system-base, userland, …)."""
        return await call(conn, lambda c: c.get("/node_modules", category_slug=category))

    @server.tool(annotations=READ)
    async def system_list_module_versions(module: str) -> Doc:
        """Every version of a module with its promotion state and digests."""
        return await call(conn, lambda c: c.get(f"/node_modules/{module}/versions"))

    @server.tool(annotations=READ)
    async def system_get_instance(instance_id: str) -> Doc:
        """One node instance: status, template, last heartbeat, running modules."""
        return await call(conn, lambda c: c.get(f"/node_instances/{instance_id}"))

    @server.tool(annotations=READ)
    async def system_drift_report(instance_id: str) -> Doc:
        """Desired vs running composefs digest of every module of an instance; drift: false
        when it runs what its template asks for."""
        return await call(conn, lambda c: c.get(f"/node_instances/{instance_id}/drift"))

    @server.tool(annotations=READ)
    async def system_template_composition(template: str) -> Doc:
        """A template's composition preview: the stack and which module wins each path."""
        return await call(conn, lambda c: c.get(f"/node_templates/{template}/composition"))

    @server.tool(annotations=READ)
    async def system_validate_module_manifest(manifest_yaml: str) -> Doc:
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
    async def list_gitea_workflow_runs(owner: str, repo: str, status: str = "") -> Doc:
        """The module builds reported by the Gitea repository ``owner/repo``: each
        webhook delivery its CI sent (with the status and attempts of the ingest it
        queued) and the module's ingest jobs, newest first. ``status`` filters the
        deliveries (queued, running, built, rejected, failed, ignored)."""
        full = f"{owner}/{repo}"

        async def go(c: OperatorClient) -> Doc:
            modules = (await c.get("/node_modules")).get("modules", [])
            match = [m for m in modules if m.get("gitea_repo_full_name") == full]
            if not match:
                raise ToolError(f"no module is built from the Gitea repository {full}")
            name = match[0]["name"]
            runs = await c.get("/webhook_deliveries", module=name, provider="gitea",
                               status=status or None, limit=100)  # fmt: skip
            ingests = (await c.get(f"/node_modules/{name}/ingests")).get("ingests", [])
            return {"module": name, "deliveries": runs.get("deliveries", []), "runs": ingests}

        return await call(conn, go)

    @server.resource("powernode://modules/{name}", mime_type="application/json")
    async def module_resource(name: str) -> str:
        """A module and its versions."""

        async def go(c: OperatorClient) -> Doc:
            module = await c.get(f"/node_modules/{name}")
            versions = await c.get(f"/node_modules/{name}/versions")
            return {**module, **versions}

        return json.dumps(await call(conn, go), sort_keys=True)

    @server.resource("powernode://templates/{name}", mime_type="application/json")
    async def template_resource(name: str) -> str:
        """A template with its assignments."""
        return json.dumps(await call(conn, lambda c: c.get(f"/node_templates/{name}")))

    @server.resource("powernode://instances/{instance_id}", mime_type="application/json")
    async def instance_resource(instance_id: str) -> str:
        """A node instance."""
        return json.dumps(await call(conn, lambda c: c.get(f"/node_instances/{instance_id}")))

    if allow_writes:
        register_writes(server, conn)
    return server
