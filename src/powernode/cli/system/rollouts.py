"""``powernode system rollout …``: start, status, pause, resume and abort a rollout in waves.

``start VERSION_ID --policy JSON`` promotes the version to live under a
rollout policy (docs/rollouts.md); the other commands act on a rollout id.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from powernode.cli.base import App
from powernode.cli.system.common import JsonOpt, TokenOpt, UrlOpt, app, remote, show

rollout_app = App(help="Rollouts in waves: start, status, pause, resume, abort.")
app.add_typer(rollout_app, name="rollout", no_args_is_help=True)

RolloutArg = Annotated[str, typer.Argument(metavar="ROLLOUT_ID", help="The rollout's id.")]


def _summary(data: dict[str, object], as_json: bool) -> None:
    if as_json:
        show(data, True)
        return
    items = data.get("rollouts")
    for r in items if isinstance(items, list) else [data["rollout"]]:
        assert isinstance(r, dict)
        typer.echo(
            f"{r['id']}  {r['state']}  wave {min(r['current_wave'], r['wave_count'])}"
            f"/{r['wave_count']}  version {r['version_id']}"
            + (f"  ({r['reason']})" if r.get("reason") else "")
        )
        for w in r["waves"]:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(w["counts"].items()))
            typer.echo(f"  wave {w['wave']}: {counts}")


@rollout_app.command("start")
def start(
    ctx: typer.Context,
    version_id: Annotated[str, typer.Argument(metavar="VERSION_ID")],
    *,
    policy: Annotated[
        str, typer.Option("--policy", help='JSON, e.g. {"waves": [{"percent": 10}, …]}.')
    ],
    template: Annotated[str | None, typer.Option("--template", help="Only this template.")] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Promote VERSION_ID to live in waves."""
    try:
        parsed = json.loads(policy)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"--policy is not JSON: {e}") from e
    body = {"policy": parsed, "template": template, "note": note}
    data = remote(ctx, url, token).call(
        "POST", f"/node_module_versions/{version_id}/rollouts", body
    )
    _summary(data, as_json)


@rollout_app.command("status")
def status(
    ctx: typer.Context,
    rollout_id: Annotated[str | None, typer.Argument(metavar="[ROLLOUT_ID]")] = None,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """One rollout's waves and per-instance states, or every rollout (newest first)."""
    path = f"/rollouts/{rollout_id}" if rollout_id else "/rollouts"
    _summary(remote(ctx, url, token).call("GET", path), as_json)


def _act(
    ctx: typer.Context,
    verb: str,
    rollout_id: str,
    *,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    _summary(remote(ctx, url, token).call("POST", f"/rollouts/{rollout_id}/{verb}"), as_json)


@rollout_app.command("pause")
def pause(
    ctx: typer.Context,
    rollout_id: RolloutArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Admit no more instances; those already admitted keep the new version."""
    _act(ctx, "pause", rollout_id, as_json=as_json, url=url, token=token)


@rollout_app.command("resume")
def resume(
    ctx: typer.Context,
    rollout_id: RolloutArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Continue a paused rollout."""
    _act(ctx, "resume", rollout_id, as_json=as_json, url=url, token=token)


@rollout_app.command("abort")
def abort(
    ctx: typer.Context,
    rollout_id: RolloutArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every instance back to the previous version; the new version is demoted to blessed."""
    _act(ctx, "abort", rollout_id, as_json=as_json, url=url, token=token)
