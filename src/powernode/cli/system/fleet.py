"""``powernode system``: templates and their assignments, nodes, instances, the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from powernode.cli.system.common import (
    InstanceArg,
    JsonOpt,
    LimitOpt,
    MetaOpt,
    PriorityOpt,
    TemplateArg,
    TokenOpt,
    UrlOpt,
    app,
    parse_metadata,
    remote,
    show,
)

if TYPE_CHECKING:
    from powernode.client import QueryValue

# --- templates ----------------------------------------------------------------


@app.command("list-templates")
def list_templates(
    ctx: typer.Context,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Node templates."""
    show(remote(ctx, url, token).call("GET", "/node_templates"), as_json)


@app.command("get-template")
def get_template(
    ctx: typer.Context,
    template: TemplateArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """A template (id or name) with its assignments, highest priority first."""
    show(remote(ctx, url, token).call("GET", f"/node_templates/{template}"), as_json)


@app.command("assign-module-to-template")
def assign_module_to_template(
    ctx: typer.Context,
    *,
    template: Annotated[str, typer.Option(help="Template id or name.")],
    module: Annotated[str, typer.Option(help="Module name.")],
    metadata: MetaOpt = None,
    effective_priority: PriorityOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Assign a module to a template; its nodes get the module's best version."""
    body = {
        "module_name": module,
        "metadata": parse_metadata(metadata) or {},
        "effective_priority": effective_priority,
    }
    show(
        remote(ctx, url, token).call("POST", f"/node_templates/{template}/assignments", body),
        as_json,
    )


@app.command("unassign-module-from-template")
def unassign_module_from_template(
    ctx: typer.Context,
    *,
    template: Annotated[str, typer.Option(help="Template id or name.")],
    module: Annotated[str, typer.Option(help="Module name.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Remove a module from a template."""
    path = f"/node_templates/{template}/assignments/{module}"
    show(remote(ctx, url, token).call("DELETE", path), as_json)


@app.command("update-module-assignment")
def update_module_assignment(
    ctx: typer.Context,
    assignment_id: Annotated[str, typer.Argument(help="Assignment id (get-template shows them).")],
    *,
    effective_priority: PriorityOpt = None,
    clear_effective_priority: Annotated[
        bool, typer.Option(help="Go back to the category/variety priority.")
    ] = False,
    metadata: MetaOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change an assignment's priority or metadata."""
    body: dict[str, object] = {}
    if clear_effective_priority:
        body["effective_priority"] = None
    elif effective_priority is not None:
        body["effective_priority"] = effective_priority
    if metadata is not None:
        body["metadata"] = parse_metadata(metadata)
    path = f"/node_module_assignments/{assignment_id}"
    show(remote(ctx, url, token).call("PATCH", path, body), as_json)


# --- nodes ----------------------------------------------------------------------


@app.command("create-node")
def create_node(
    ctx: typer.Context,
    *,
    hostname: Annotated[str, typer.Option(help="RFC 1123 host name, e.g. redis-test-1.")],
    template: Annotated[str, typer.Option(help="Template id or name.")],
    metadata: MetaOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a node (a host name on a template); instances are its machines."""
    body = {
        "hostname": hostname,
        "node_template_id": template,
        "metadata": parse_metadata(metadata),
    }
    if body["metadata"] is None:
        del body["metadata"]
    show(remote(ctx, url, token).call("POST", "/nodes", body), as_json)


@app.command("list-nodes")
def list_nodes(
    ctx: typer.Context,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Nodes with their template."""
    show(remote(ctx, url, token).call("GET", "/nodes"), as_json)


@app.command("provision-instance")
def provision_instance(
    ctx: typer.Context,
    *,
    node: Annotated[str, typer.Option(help="Node id or hostname.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Start a new instance of a node."""
    show(remote(ctx, url, token).call("POST", "/node_instances", {"node_id": node}), as_json)


@app.command("list-instances")
def list_instances(
    ctx: typer.Context,
    *,
    node: Annotated[str | None, typer.Option(help="Only this node's (id or hostname).")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Instances with their node and status."""
    params = {"node": node} if node else None
    show(remote(ctx, url, token).call("GET", "/node_instances", params=params), as_json)


@app.command("get-instance")
def get_instance(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """One instance: its node, status and provider."""
    show(remote(ctx, url, token).call("GET", f"/node_instances/{instance_id}"), as_json)


@app.command("terminate-instance")
def terminate_instance(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Mark an instance terminated."""
    show(remote(ctx, url, token).call("POST", f"/node_instances/{instance_id}/terminate"), as_json)


@app.command("reboot-instance")
def reboot_instance(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Power-cycle an instance's machine (same disks and identity)."""
    show(remote(ctx, url, token).call("POST", f"/node_instances/{instance_id}/reboot"), as_json)


@app.command("instance-console")
def instance_console(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    tail_bytes: Annotated[
        int, typer.Option(min=1, max=1 << 20, help="Show at most this many last bytes.")
    ] = 64 * 1024,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The tail of an instance's serial console (kept after terminate)."""
    text = remote(ctx, url, token).text(
        f"/node_instances/{instance_id}/console", params={"tail_bytes": tail_bytes}
    )
    typer.echo(text, nl=False)


@app.command("audit-log")
def audit_log(
    ctx: typer.Context,
    *,
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. module_version.promote.")
    ] = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Operator writes, newest first."""
    params: dict[str, QueryValue] = {"limit": limit}
    if action:
        params["action"] = action
    show(remote(ctx, url, token).call("GET", "/audit_log", params=params), as_json)
