"""``powernode system``: composition preview, drift, and the node API's operator side
(bootstrap tokens, certificates, tasks, events; docs/node-api.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from powernode.cli.system.common import (
    InstanceArg,
    JsonOpt,
    LimitOpt,
    TemplateArg,
    TokenOpt,
    UrlOpt,
    app,
    print_table,
    remote,
    show,
)

if TYPE_CHECKING:
    from powernode.client import QueryValue

# --- composition and drift ------------------------------------------------------


@app.command("template-composition")
def template_composition(
    ctx: typer.Context,
    template: TemplateArg,
    *,
    allowed_state: Annotated[
        list[str] | None,
        typer.Option("--allowed-state", help="Promotion states to choose from (repeat)."),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The template's modules resolved through dependencies and composed (preview)."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from powernode.core.composition import Composition  # noqa: PLC0415

    params = {"allowed_states": allowed_state} if allowed_state else None
    data = remote(ctx, url, token).call(
        "GET", f"/node_templates/{template}/composition", params=params
    )
    if as_json:
        show(data, True)
        return
    console = Console()
    print_table(console, "desired", data["modules"])
    headers, rows = Composition.from_dict(data["composition"]).table_rows()
    table = Table(title=f"composition of {data['template']['name']}")
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("drift-report")
def drift_report(
    ctx: typer.Context,
    *,
    instance: Annotated[str | None, typer.Option(help="Instance id.")] = None,
    template: Annotated[
        str | None, typer.Option(help="Template id or name: every running instance.")
    ] = None,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 3 when there is drift (as git diff).")
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Desired module set vs what the instance(s) report running."""
    if (instance is None) == (template is None):
        raise typer.BadParameter("give exactly one of --instance or --template")
    path = f"/node_instances/{instance}/drift" if instance else f"/node_templates/{template}/drift"
    data = remote(ctx, url, token).call("GET", path)
    if as_json:
        show(data, True)
    else:
        from rich.console import Console  # noqa: PLC0415

        console = Console()
        reports = data.get("instances", [data])
        for r in reports:
            typer.echo(f"{r['hostname']} ({r['instance_id']}): drift {str(r['drift']).lower()}")
            print_table(console, "drift", r["modules"])
        typer.echo(f"drift: {str(data['drift']).lower()}")
    if exit_code and data["drift"]:
        raise typer.Exit(3)


# -- the node API's operator side (docs/node-api.md) ------------------------------------


@app.command("create-bootstrap-token")
def create_bootstrap_token(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    ttl_seconds: Annotated[
        int | None, typer.Option(help="Lifetime (default: the platform's setting).")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """A single-use enrollment token for the instance (shown once: pass it to the agent)."""
    body = {"ttl_seconds": ttl_seconds} if ttl_seconds else {}
    data = remote(ctx, url, token).call(
        "POST", f"/node_instances/{instance_id}/bootstrap_tokens", body
    )
    if as_json:
        show(data, True)
        return
    typer.echo(data["token"])
    typer.echo(
        f"(single use, expires {data['expires_at']}; shown only now: "
        "powernode-agent enroll --token-file FILE)",
        err=True,
    )


@app.command("revoke-instance-certificates")
def revoke_instance_certificates(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke every certificate of the instance; it must enroll again with a new token."""
    path = f"/node_instances/{instance_id}/certificates/revoke"
    show(remote(ctx, url, token).call("POST", path), as_json)


@app.command("list-instance-certificates")
def list_instance_certificates(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The instance\'s certificates, issued and revoked."""
    show(
        remote(ctx, url, token).call("GET", f"/node_instances/{instance_id}/certificates"), as_json
    )


@app.command("enqueue-task")
def enqueue_task(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    kind: Annotated[str, typer.Option(help="Task kind, e.g. modules.sync.")],
    payload: Annotated[str, typer.Option(help="JSON object handed to the task.")] = "{}",
    max_attempts: Annotated[int, typer.Option(help="Leases before it fails for good.")] = 3,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Queue a task for the instance; its agent leases it at the next heartbeat."""
    try:
        doc = json.loads(payload)
    except ValueError as e:
        raise typer.BadParameter(f"--payload is not JSON: {e}") from e
    body = {"kind": kind, "payload": doc, "max_attempts": max_attempts}
    show(
        remote(ctx, url, token).call("POST", f"/node_instances/{instance_id}/tasks", body), as_json
    )


@app.command("list-instance-tasks")
def list_instance_tasks(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    limit: LimitOpt = 100,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The instance\'s tasks, newest first, with state and attempts."""
    params = {"limit": limit}
    show(
        remote(ctx, url, token).call("GET", f"/node_instances/{instance_id}/tasks", params=params),
        as_json,
    )


@app.command("list-instance-events")
def list_instance_events(
    ctx: typer.Context,
    instance_id: InstanceArg,
    *,
    kind: Annotated[str | None, typer.Option(help="Only events of this kind.")] = None,
    limit: LimitOpt = 100,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Events the instance's agent reported, newest first."""
    params: dict[str, QueryValue] = {"limit": limit, **({"kind": kind} if kind else {})}
    path = f"/node_instances/{instance_id}/events"
    show(remote(ctx, url, token).call("GET", path, params=params), as_json)
