"""``powernode nodescript sign | register | show | run``: NodeScripts (signing/nodescript.py).

``sign`` makes the signed document locally with a cosign key (password from
``COSIGN_PASSWORD`` or a prompt): the platform never sees the key.
``register`` stores it on the platform, ``show`` reads it back, ``run``
enqueues it on an instance (an ``agent.exec`` task). ``--url``/``--token`` as
for ``powernode system`` (POWERNODE_URL, POWERNODE_TOKEN).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from powernode.cli.system.common import Remote

from powernode.cli.base import App
from powernode.errors import PowernodeError

app = App(name="nodescript", help="Sign, register and run NodeScripts on nodes.")

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="POWERNODE_URL", metavar="URL", help="Platform base URL."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="POWERNODE_TOKEN", metavar="TOKEN", help="API token."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]


def _fail(e: PowernodeError) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


def _remote(ctx: typer.Context, url: str | None, token: str | None) -> Remote:
    from powernode.cli.system.common import remote  # noqa: PLC0415

    return remote(ctx, url, token)


@app.command()
def sign(
    script: Annotated[Path, typer.Argument(help="The script file.")],
    *,
    name: Annotated[str, typer.Option("--name", help="NodeScript name.")],
    version: Annotated[int, typer.Option("--version", help="Version (higher than the last).")],
    key: Annotated[Path, typer.Option("--key", help="cosign private key (cosign.key).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed document.")],
    interpreter: Annotated[str, typer.Option(help="Absolute path run with the script.")] = (
        "/bin/sh"
    ),
    timeout: Annotated[int, typer.Option("--timeout", help="Seconds before it is killed.")] = 60,
    memory_bytes: Annotated[int | None, typer.Option(help="Memory limit.")] = None,
    tasks_max: Annotated[int | None, typer.Option(help="Process/thread limit.")] = None,
    cpu_seconds: Annotated[int | None, typer.Option(help="CPU time limit.")] = None,
    output_bytes: Annotated[int | None, typer.Option(help="Output kept per stream.")] = None,
) -> None:
    """Sign SCRIPT as NodeScript NAME vVERSION with KEY; the limits are signed with it."""
    from powernode.cli.module.publish import _password  # noqa: PLC0415
    from powernode.signing import read_private_key  # noqa: PLC0415
    from powernode.signing.nodescript import parse  # noqa: PLC0415

    limits = {
        k: v
        for k, v in {
            "memory_bytes": memory_bytes,
            "tasks_max": tasks_max,
            "cpu_seconds": cpu_seconds,
            "output_bytes": output_bytes,
        }.items()
        if v is not None
    }
    try:
        body = script.read_text()
        doc = {
            "name": name,
            "version": version,
            "script": body,
            "interpreter": interpreter,
            "timeout_seconds": timeout,
            "limits": limits,
        }
        signed = parse(doc).signed(read_private_key(key, _password(confirm=False)))
    except OSError as e:
        raise typer.BadParameter(f"{e.filename}: {e.strerror}") from e
    except PowernodeError as e:
        raise _fail(e) from e
    out.write_text(json.dumps(signed.to_dict(), indent=2, sort_keys=True) + "\n")
    typer.echo(f"signed NodeScript {name} v{version} with key {signed.key_fingerprint} -> {out}")


@app.command()
def register(
    ctx: typer.Context,
    document: Annotated[Path, typer.Argument(help="The signed document ('sign' wrote it).")],
    *,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a signed NodeScript on the platform (versions of a name only grow)."""
    try:
        doc = json.loads(document.read_text())
    except (OSError, ValueError) as e:
        raise typer.BadParameter(f"{document}: not a JSON document ({e})") from e
    answer = _remote(ctx, url, token).call("POST", "/nodescripts", doc)
    row = answer["nodescript"]
    if as_json:
        typer.echo(json.dumps(answer, indent=2, sort_keys=True))
    else:
        typer.echo(f"registered NodeScript {row['name']} v{row['version']} ({row['id']})")


@app.command()
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="NodeScript name.")],
    instance: Annotated[str, typer.Argument(help="Instance id.")],
    *,
    version: Annotated[int | None, typer.Option("--version", help="Default: newest.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run NodeScript NAME on INSTANCE: an agent.exec task (GET …/tasks follows it)."""
    body = {"version": version} if version is not None else {}
    path = f"/node_instances/{instance}/nodescripts/{name}/run"
    answer = _remote(ctx, url, token).call("POST", path, body)
    if as_json:
        typer.echo(json.dumps(answer, indent=2, sort_keys=True))
    else:
        typer.echo(f"enqueued task {answer['task']['id']} (agent.exec {name}) on {instance}")
