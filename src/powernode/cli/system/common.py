"""What every ``powernode system`` command shares: the group, its options, the remote, output.

The commands are in ``system_catalog.py`` (modules and versions),
``system_fleet.py`` (templates, nodes, instances, audit) and
``system_reports.py`` (composition, drift, the node API's operator side);
``system.py`` is the group they register on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

    from powernode.client import JsonObject, Params, SyncOperatorClient

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
        with self._client() as client:
            return client.request(method, path, body=body, params=params)

    def text(self, path: str, params: Params = None) -> str:
        """A GET whose answer is text, e.g. an instance's console."""
        with self._client() as client:
            return client.get_text(path, params=params)

    @contextmanager
    def _client(self) -> Iterator[SyncOperatorClient]:
        # Only the commands that call the API load httpx (bench/bench_cli_start.py).
        from powernode.client import (  # noqa: PLC0415
            ApiError,
            PlatformUnreachableError,
            SyncOperatorClient,
        )

        try:
            with SyncOperatorClient(self.url, self.token, self.transport) as client:
                yield client
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


def remote(ctx: typer.Context, url: str | None = None, token: str | None = None) -> Remote:
    """The platform to call: the group's --url/--token, overridden by the command's own."""
    remote = ctx.find_object(Remote)
    if remote is None:  # the command was called without its group (a test's own app)
        remote = Remote(DEFAULT_URL, None)
    if url is not None:
        remote.url = check_url(url)
    if token is not None:
        remote.token = token
    return remote


def show(data: JsonObject, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    from rich.console import Console  # noqa: PLC0415

    console = Console()
    for key, value in data.items():
        if isinstance(value, list):
            print_table(console, key, value)
        elif isinstance(value, dict):
            nested = {k: v for k, v in value.items() if isinstance(v, list)}
            for k, v in value.items():
                if k not in nested:
                    typer.echo(f"{k}: {v}")
            for k, v in nested.items():
                print_table(console, k, v)
        else:
            typer.echo(f"{key}: {value}")


def print_table(console: Console, key: str, rows: list[JsonObject]) -> None:
    from rich.table import Table  # noqa: PLC0415

    cols = COLUMNS.get(key) or (tuple(rows[0]) if rows else ("(none)",))
    table = Table(title=key)
    for c in cols:
        table.add_column(c)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in cols))
    console.print(table)


def parse_metadata(items: list[str] | None) -> dict[str, object] | None:
    if items is None:
        return None
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: write KEY=VALUE", param_hint="--metadata")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out
