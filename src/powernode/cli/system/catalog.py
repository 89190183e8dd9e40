"""``powernode system``: module categories, modules and their versions (promotion, ingest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.system.common import (
    JsonOpt,
    LimitOpt,
    ModuleArg,
    NoteOpt,
    TokenOpt,
    UrlOpt,
    VersionIdArg,
    app,
    remote,
    show,
)

# --- catalog ------------------------------------------------------------------


@app.command("list-categories")
def list_categories(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Module categories in priority order."""
    show(remote(ctx, url, token).call("GET", "/node_module_categories"), as_json)


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
    data = remote(ctx, url, token).call("POST", "/node_modules", body)
    show(data, as_json)
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
    show(remote(ctx, url, token).call("GET", "/node_modules", params=params), as_json)


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
    show(remote(ctx, url, token).call("GET", f"/node_modules/{name}"), as_json)


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
    show(remote(ctx, url, token).call("DELETE", f"/node_modules/{name}", params=params), as_json)


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
    show(remote(ctx, url, token).call("GET", f"/node_modules/{module}/versions"), as_json)


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
    show(remote(ctx, url, token).call("POST", f"/node_modules/{module}/versions", body), as_json)


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
    show(remote(ctx, url, token).call("GET", path, params={"limit": limit}), as_json)


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
    show(remote(ctx, url, token).call("POST", path, {"tag": tag}), as_json)


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
    show(remote(ctx, url, token).call("GET", f"/node_module_versions/{version_id}"), as_json)


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
    show(
        remote(ctx, url, token).call("POST", f"/node_module_versions/{version_id}/promote", body),
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
    show(
        remote(ctx, url, token).call("POST", f"/node_module_versions/{version_id}/demote", body),
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
    show(
        remote(ctx, url, token).call("POST", f"/node_module_versions/{version_id}/retire", body),
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
    show(remote(ctx, url, token).call("POST", path, {"note": note}), as_json)
