"""`powernode system …`: the operator's commands, over the platform's REST API.

Command names are the seeds' operation names without ``system_``
(``system_promote_module_version`` → ``promote-module-version``). The platform
is reached at ``--url`` / ``POWERNODE_URL`` with the token in ``--token`` /
``POWERNODE_TOKEN``. Every command takes ``--json`` to print the API's answer.
Only httpx is needed: this file imports nothing from ``powernode.platform``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

    from powernode.client import JsonObject, Params

from powernode.cli.base import App

app = App()

DEFAULT_URL = "http://127.0.0.1:8400"
API = "/api/v1/system"
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
MetaOpt = Annotated[
    list[str] | None, typer.Option("--metadata", help="KEY=VALUE (repeat); VALUE may be JSON.")
]
NoteOpt = Annotated[str, typer.Option("--note", help="Why, recorded in the audit log.")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")]
ModuleArg = Annotated[str, typer.Argument(help="Module name.", show_default=False)]
VersionIdArg = Annotated[
    str, typer.Argument(help="Version id (list-module-versions shows them).", show_default=False)
]
InstanceArg = Annotated[
    str, typer.Argument(help="Instance id (list-instances shows them).", show_default=False)
]
TemplateArg = Annotated[str, typer.Argument(help="Template id or name.", show_default=False)]
PriorityOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Priority for this assignment alone (higher wins)."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", metavar="URL", help="Platform base URL (also before the command; POWERNODE_URL)."
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", metavar="TOKEN", help="API token (also before the command; POWERNODE_TOKEN)."
    ),
]
# The columns shown for each list the API returns.
COLUMNS: dict[str, tuple[str, ...]] = {
    "categories": ("slug", "position", "name"),
    "modules": ("name", "category_slug", "variety", "require_approval"),
    "versions": ("id", "version_string", "promotion_state", "composefs_digest"),
    "templates": ("name", "id", "description"),
    "assignments": ("module_name", "resolved_priority", "priority", "effective_priority", "id"),
    "nodes": ("hostname", "template_name", "id"),
    "instances": ("id", "hostname", "status", "provider"),
    "audit_log": ("at", "actor", "action", "summary"),
    "ingests": ("tag", "state", "source", "reason", "version_id"),
    "desired": ("name", "version_string", "promotion_state", "priority", "assigned"),
    "drift": ("name", "status", "desired_version", "desired_digest", "running_digest"),
    "tasks": ("id", "kind", "state", "attempts", "max_attempts", "error"),
    "events": ("occurred_at", "severity", "kind", "agent_event_id"),
    "certificates": ("serial", "reason", "issued_at", "not_after", "revoked_at"),
}


# The API's field names → the flags and arguments that set them, so an error
# the platform reports about a field names what the user typed.
FLAGS = {
    "category_slug": "--category",
    "parent_module": "--parent-module",
    "cosign_identity_regexp": "--cosign-identity-regexp",
    "cosign_issuer_regexp": "--cosign-issuer-regexp",
    "cosign_public_key": "--cosign-public-key-file",
    "require_approval": "--require-approval",
    "gitea_repo_full_name": "--gitea-repo",
    "github_repo_full_name": "--github-repo",
    "version_string": "VERSION",
    "composefs_digest": "--composefs-digest",
    "fsverity_root_hash": "--fsverity-root-hash",
    "artifact_ref": "--artifact-ref",
    "module_name": "--module",
    "effective_priority": "--effective-priority",
    "node_template_id": "--template",
    "node_id": "--node",
    "ttl_seconds": "--ttl-seconds",
    "max_attempts": "--max-attempts",
    "allowed_states": "--allowed-state",
}
_FIELD = re.compile(r"\b(" + "|".join(map(re.escape, FLAGS)) + r")\b")


def user_words(detail: str) -> str:
    """``detail`` with the API's field names replaced by this CLI's flags."""
    return _FIELD.sub(lambda m: FLAGS[m.group(1)], detail)


def check_url(url: str) -> str:
    """``url`` without a trailing slash, or a usage error saying what a URL looks like."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest.strip("/"):
        raise typer.BadParameter(
            f"{url!r} is not a platform URL: write http://HOST:PORT or https://HOST:PORT "
            f"(default {DEFAULT_URL})",
            param_hint="--url",
        )
    return url.rstrip("/")


@dataclass
class Remote:
    """The platform the commands call: the operator client, its errors turned into exits.

    One :class:`~powernode.client.SyncOperatorClient` per call; a refusal or an
    unreachable platform is printed to stderr in the user's words (flags, not
    API field names) and exits 1.
    """

    url: str
    token: str | None
    transport: httpx.BaseTransport | None = None

    def call(
        self, method: str, path: str, body: object = None, params: Params = None
    ) -> JsonObject:
        # Only the commands that call the API load httpx (bench/bench_cli_start.py).
        from powernode.client import (  # noqa: PLC0415
            ApiError,
            PlatformUnreachableError,
            SyncOperatorClient,
        )

        try:
            with SyncOperatorClient(self.url, self.token, self.transport) as client:
                return client.request(method, path, body=body, params=params)
        except PlatformUnreachableError as e:
            typer.echo(
                f"error: cannot reach the platform at {self.url} ({e.cause}); "
                "is `powernode platform serve` running there? Give its address with --url "
                "or POWERNODE_URL.",
                err=True,
            )
            raise typer.Exit(1) from e
        except ApiError as e:
            detail = e.detail
            if e.status == 401:
                detail = f"{detail} (give an API token with --token or POWERNODE_TOKEN)"
            typer.echo(f"error: {e.status} {e.reason}: {user_words(detail)}", err=True)
            raise typer.Exit(1) from e


@app.callback()
def _connect(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="POWERNODE_URL", metavar="URL", help="Platform base URL."),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="POWERNODE_TOKEN", metavar="TOKEN", help="API token (pnt_…)."
        ),
    ] = None,
) -> None:
    """Operate the fleet through the platform API.

    --url and --token go before or after the command; POWERNODE_URL and
    POWERNODE_TOKEN set them for every command.
    """
    if ctx.obj is None or isinstance(ctx.obj, dict):  # tests hand in a Remote with a transport
        ctx.obj = Remote(check_url(url), token)


def _remote(ctx: typer.Context, url: str | None = None, token: str | None = None) -> Remote:
    """The platform to call: the group's --url/--token, overridden by the command's own."""
    remote = ctx.find_object(Remote)
    if remote is None:  # the command was called without its group (a test's own app)
        remote = Remote(DEFAULT_URL, None)
    if url is not None:
        remote.url = check_url(url)
    if token is not None:
        remote.token = token
    return remote


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    from rich.console import Console  # noqa: PLC0415

    console = Console()
    for key, value in data.items():
        if isinstance(value, list):
            _table(console, key, value)
        elif isinstance(value, dict):
            nested = {k: v for k, v in value.items() if isinstance(v, list)}
            for k, v in value.items():
                if k not in nested:
                    typer.echo(f"{k}: {v}")
            for k, v in nested.items():
                _table(console, k, v)
        else:
            typer.echo(f"{key}: {value}")


def _table(console: Console, key: str, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table  # noqa: PLC0415

    cols = COLUMNS.get(key) or (tuple(rows[0]) if rows else ("(none)",))
    table = Table(title=key)
    for c in cols:
        table.add_column(c)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in cols))
    console.print(table)


def _metadata(items: list[str] | None) -> dict[str, Any] | None:
    if items is None:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: write KEY=VALUE", param_hint="--metadata")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


# --- catalog ------------------------------------------------------------------


@app.command("list-categories")
def list_categories(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Module categories in priority order."""
    _show(_remote(ctx, url, token).call("GET", "/node_module_categories"), as_json)


@app.command("create-module")
def create_module(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new module's name (a lowercase slug).")],
    *,
    category: Annotated[str, typer.Option("--category", help="Category slug, e.g. userland.")],
    variety: Annotated[str, typer.Option(help="subscription, config or instance.")] = (
        "subscription"
    ),
    parent_module: Annotated[str | None, typer.Option(help="For config modules.")] = None,
    description: Annotated[str, typer.Option(help="One line shown with the module.")] = "",
    cosign_identity_regexp: Annotated[
        str | None, typer.Option(help="Keyless trust: the signer identity (full match).")
    ] = None,
    cosign_issuer_regexp: Annotated[
        str | None, typer.Option(help="Keyless trust: the OIDC issuer (full match).")
    ] = None,
    cosign_public_key_file: Annotated[
        Path | None, typer.Option(help="cosign.pub (PEM) for key-based trust.")
    ] = None,
    require_approval: Annotated[bool, typer.Option(help="Going live needs an approval.")] = False,
    gitea_repo: Annotated[
        str | None, typer.Option(help="OWNER/REPO on Gitea whose webhook may ingest tags.")
    ] = None,
    github_repo: Annotated[
        str | None, typer.Option(help="OWNER/REPO on GitHub whose webhook may ingest tags.")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Register a module; prints its webhook secret once."""
    body = {
        "name": name,
        "category_slug": category,
        "variety": variety,
        "parent_module": parent_module,
        "description": description,
        "cosign_identity_regexp": cosign_identity_regexp,
        "cosign_issuer_regexp": cosign_issuer_regexp,
        "cosign_public_key": cosign_public_key_file.read_text() if cosign_public_key_file else None,
        "require_approval": require_approval,
        "gitea_repo_full_name": gitea_repo,
        "github_repo_full_name": github_repo,
    }
    data = _remote(ctx, url, token).call("POST", "/node_modules", body)
    _show(data, as_json)
    if not as_json:
        typer.echo(
            "\nwebhook_secret is shown once: store it now as POWERNODE_WEBHOOK_SECRET "
            "in the module repo's CI secrets.",
            err=True,
        )


@app.command("list-modules")
def list_modules(
    ctx: typer.Context,
    *,
    category: Annotated[
        str | None, typer.Option(help="Only modules of this category (its slug).")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Registered modules, with their category and variety."""
    params = {"category_slug": category} if category else None
    _show(_remote(ctx, url, token).call("GET", "/node_modules", params=params), as_json)


@app.command("get-module")
def get_module(
    ctx: typer.Context,
    name: ModuleArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """One module: category, variety, trust policy and repositories."""
    _show(_remote(ctx, url, token).call("GET", f"/node_modules/{name}"), as_json)


@app.command("delete-module")
def delete_module(
    ctx: typer.Context,
    name: ModuleArg,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Delete even when a version is live or the module is assigned "
            "(needs the promote-live scope).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete a module with its versions; refused while live or assigned unless --force."""
    if not yes:
        typer.confirm(f"delete module {name} with its versions and assignments?", abort=True)
    params = {"force": "true"} if force else None
    _show(_remote(ctx, url, token).call("DELETE", f"/node_modules/{name}", params=params), as_json)


@app.command("list-module-versions")
def list_module_versions(
    ctx: typer.Context,
    module: ModuleArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """A module\'s versions with their promotion state and digest."""
    _show(_remote(ctx, url, token).call("GET", f"/node_modules/{module}/versions"), as_json)


@app.command("register-module-version")
def register_module_version(
    ctx: typer.Context,
    module: ModuleArg,
    version: Annotated[str, typer.Argument(help="Version string, e.g. 1.2.0.")],
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Announce a version by hand (state built, no artifact: ingest records digests)."""
    body = {"version_string": version}
    _show(_remote(ctx, url, token).call("POST", f"/node_modules/{module}/versions", body), as_json)


@app.command("list-module-ingests")
def list_module_ingests(
    ctx: typer.Context,
    module: ModuleArg,
    *,
    limit: LimitOpt = 100,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Tags ingested, rejected (with the reason) or queued for a module, newest first."""
    path = f"/node_modules/{module}/ingests"
    _show(_remote(ctx, url, token).call("GET", path, params={"limit": limit}), as_json)


@app.command("ingest-module-version")
def ingest_module_version(
    ctx: typer.Context,
    module: ModuleArg,
    tag: Annotated[str, typer.Argument(help="Registry tag, e.g. v1.2.0.")],
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Queue (or retry) the ingest of a tag from the registry, as the webhook does."""
    path = f"/node_modules/{module}/ingests"
    _show(_remote(ctx, url, token).call("POST", path, {"tag": tag}), as_json)


@app.command("get-module-version")
def get_module_version(
    ctx: typer.Context,
    version_id: VersionIdArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """One version: promotion state, digests and artifact."""
    _show(_remote(ctx, url, token).call("GET", f"/node_module_versions/{version_id}"), as_json)


@app.command("promote-module-version")
def promote_module_version(
    ctx: typer.Context,
    version_id: VersionIdArg,
    *,
    to: Annotated[str, typer.Option(help="staging, blessed, live or retired.")],
    note: NoteOpt = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Move a version forward: built, staging, blessed, live."""
    body = {"to": to, "note": note}
    _show(
        _remote(ctx, url, token).call("POST", f"/node_module_versions/{version_id}/promote", body),
        as_json,
    )


@app.command("demote-module-version")
def demote_module_version(
    ctx: typer.Context,
    version_id: VersionIdArg,
    *,
    to: Annotated[str | None, typer.Option(help="Default: one step back.")] = None,
    note: NoteOpt = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Move a version back (one step, or to --to)."""
    body = {"to": to, "note": note}
    _show(
        _remote(ctx, url, token).call("POST", f"/node_module_versions/{version_id}/demote", body),
        as_json,
    )


@app.command("retire-module-version")
def retire_module_version(
    ctx: typer.Context,
    version_id: VersionIdArg,
    *,
    note: NoteOpt = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Retire a version: no template gets it any more."""
    body = {"note": note}
    _show(
        _remote(ctx, url, token).call("POST", f"/node_module_versions/{version_id}/retire", body),
        as_json,
    )


@app.command("approve-module-version")
def approve_module_version(
    ctx: typer.Context,
    version_id: VersionIdArg,
    *,
    note: NoteOpt = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Approve a version going live (modules with require_approval; another token promotes)."""
    path = f"/node_module_versions/{version_id}/approvals"
    _show(_remote(ctx, url, token).call("POST", path, {"note": note}), as_json)


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
    _show(_remote(ctx, url, token).call("GET", "/node_templates"), as_json)


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
    _show(_remote(ctx, url, token).call("GET", f"/node_templates/{template}"), as_json)


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
        "metadata": _metadata(metadata) or {},
        "effective_priority": effective_priority,
    }
    _show(
        _remote(ctx, url, token).call("POST", f"/node_templates/{template}/assignments", body),
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
    _show(_remote(ctx, url, token).call("DELETE", path), as_json)


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
    body: dict[str, Any] = {}
    if clear_effective_priority:
        body["effective_priority"] = None
    elif effective_priority is not None:
        body["effective_priority"] = effective_priority
    if metadata is not None:
        body["metadata"] = _metadata(metadata)
    path = f"/node_module_assignments/{assignment_id}"
    _show(_remote(ctx, url, token).call("PATCH", path, body), as_json)


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
    body = {"hostname": hostname, "node_template_id": template, "metadata": _metadata(metadata)}
    if body["metadata"] is None:
        del body["metadata"]
    _show(_remote(ctx, url, token).call("POST", "/nodes", body), as_json)


@app.command("list-nodes")
def list_nodes(
    ctx: typer.Context,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Nodes with their template."""
    _show(_remote(ctx, url, token).call("GET", "/nodes"), as_json)


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
    _show(_remote(ctx, url, token).call("POST", "/node_instances", {"node_id": node}), as_json)


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
    _show(_remote(ctx, url, token).call("GET", "/node_instances", params=params), as_json)


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
    _show(_remote(ctx, url, token).call("GET", f"/node_instances/{instance_id}"), as_json)


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
    _show(
        _remote(ctx, url, token).call("POST", f"/node_instances/{instance_id}/terminate"), as_json
    )


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
    params: dict[str, Any] = {"limit": limit}
    if action:
        params["action"] = action
    _show(_remote(ctx, url, token).call("GET", "/audit_log", params=params), as_json)


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
    data = _remote(ctx, url, token).call(
        "GET", f"/node_templates/{template}/composition", params=params
    )
    if as_json:
        _show(data, True)
        return
    console = Console()
    _table(console, "desired", data["modules"])
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
    data = _remote(ctx, url, token).call("GET", path)
    if as_json:
        _show(data, True)
    else:
        from rich.console import Console  # noqa: PLC0415

        console = Console()
        reports = data.get("instances", [data])
        for r in reports:
            typer.echo(f"{r['hostname']} ({r['instance_id']}): drift {str(r['drift']).lower()}")
            _table(console, "drift", r["modules"])
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
    data = _remote(ctx, url, token).call(
        "POST", f"/node_instances/{instance_id}/bootstrap_tokens", body
    )
    if as_json:
        _show(data, True)
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
    _show(_remote(ctx, url, token).call("POST", path), as_json)


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
    _show(
        _remote(ctx, url, token).call("GET", f"/node_instances/{instance_id}/certificates"), as_json
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
    _show(
        _remote(ctx, url, token).call("POST", f"/node_instances/{instance_id}/tasks", body), as_json
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
    _show(
        _remote(ctx, url, token).call("GET", f"/node_instances/{instance_id}/tasks", params=params),
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
    params: dict[str, Any] = {"limit": limit, **({"kind": kind} if kind else {})}
    path = f"/node_instances/{instance_id}/events"
    _show(_remote(ctx, url, token).call("GET", path, params=params), as_json)
