"""`powernode-agent`: the node agent's command line (seed 000's subcommands, those built so far).

``service`` runs the loop until SIGTERM and exits 0 after the drain;
``enroll`` exchanges a bootstrap token for the node's certificate;
``introspect`` prints the agent's view of itself (identity, certificate,
modules, buffer), ``status`` a short summary, ``version`` the version.
Only this module prints or exits; errors go to stderr with exit status 1.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from powernode.cli.agent.surface import register as register_surface
from powernode.cli.base import App, Loaded, LogFormatOpt, configure_logging, run
from powernode.errors import PowernodeError

if TYPE_CHECKING:
    from powernode.agent.config import AgentConfig

# The agent's view (powernode.agent.view), read back by key to print it.
View = dict[str, Any]  # Any: JSON values, indexed by the printing code below

app = App(
    name="powernode-agent",
    help="The powernode node agent.",
    no_args_is_help=True,
    add_completion=True,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="POWERNODE_AGENT_CONFIG",
        help="Agent config file (TOML; default /etc/powernode/agent.toml if it exists).",
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="State directory (default /persist/var/lib/powernode)."),
]
UrlOpt = Annotated[
    str | None, typer.Option("--platform-url", help="https://host:port of the platform.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")]


def _config(
    config: Path | None, *, state_dir: Path | None = None, platform_url: str | None = None
) -> AgentConfig:
    from powernode.agent.assemble import load_agent_config  # noqa: PLC0415

    return load_agent_config(config, state_dir=state_dir, platform_url=platform_url)


def _logging(verbose: bool, fmt: str = "text") -> None:
    configure_logging(fmt, verbose=verbose)


def _json(doc: object, *, indent: int = 2, sort_keys: bool = False) -> str:
    import json  # noqa: PLC0415 - not on --help's path (bench/bench_cli_start.py)

    return json.dumps(doc, indent=indent, sort_keys=sort_keys)


def _fail(e: PowernodeError) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


@app.command()
def service(
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    platform_url: UrlOpt = None,
    verbose: VerboseOpt = False,
    log_format: str = LogFormatOpt,
) -> None:
    """Run the agent: heartbeat every 30 s, lease and run tasks, rotate, flush events.

    SIGTERM drains in-flight tasks, reports them, flushes the event buffer and exits 0.
    Under systemd (Type=notify) it reports READY and pings the watchdog from its loop.
    """
    from powernode.agent.assemble import run_service  # noqa: PLC0415

    _logging(verbose, log_format)
    try:
        code = run_service(_config(config, state_dir=state_dir, platform_url=platform_url))
    except PowernodeError as e:
        raise _fail(e) from e
    raise typer.Exit(code)


@app.command()
def boot(
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    verbose: VerboseOpt = False,
    log_format: str = LogFormatOpt,
) -> None:
    """First boot after the initramfs: identity, enroll with the seed's token, record the
    mounted set, then run ``service`` (docs/boot.md)."""
    from powernode.agent.assemble import node_layout, run_service  # noqa: PLC0415
    from powernode.agent.boot import BOOT_REFUSED, BootError, first_boot  # noqa: PLC0415

    _logging(verbose, log_format)
    cfg = _config(config, state_dir=state_dir)
    try:
        report = first_boot(
            cfg,
            node_layout(cfg),
            lambda line: typer.echo(f"powernode-agent boot: {line}", err=True),
        )
        cfg = dataclasses.replace(
            cfg,
            platform_url=report.platform_url,
            modules_registry=report.modules_registry,
            modules_registry_name=report.modules_registry_name,
        )
        code = run_service(cfg)
    except BootError as e:  # refused: retrying cannot help (agent/init/agent-run)
        typer.echo(f"powernode-agent boot: {e}", err=True)
        raise typer.Exit(BOOT_REFUSED) from e
    except PowernodeError as e:
        typer.echo(f"powernode-agent boot: {e}", err=True)
        raise typer.Exit(1) from e
    raise typer.Exit(code)


@app.command()
def enroll(
    *,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File holding the bootstrap token ('-' for stdin). Or set "
            "POWERNODE_AGENT_BOOTSTRAP_TOKEN; never on the command line, where ps shows it.",
        ),
    ] = None,
    platform_ca: Annotated[
        Path | None,
        typer.Option(
            "--platform-ca",
            help="PEM the platform's TLS certificate must chain to (default: platform_ca_file).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Enroll again even if enrolled.")] = False,
    discover: Annotated[
        bool, typer.Option(help="Discover the identity first (its UUID goes into the CSR).")
    ] = True,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    platform_url: UrlOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Exchange a bootstrap token for this node's client certificate (key made here)."""
    import sys  # noqa: PLC0415

    from powernode.agent.join import join  # noqa: PLC0415

    _logging(verbose)
    try:
        info = join(
            _config(config, state_dir=state_dir, platform_url=platform_url),
            token_file,
            stdin=sys.stdin,
            environ=os.environ,
            platform_ca=platform_ca,
            force=force,
            discover=discover,
        )
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(_json(info.to_dict(), indent=2))
    else:
        typer.echo(
            f"enrolled as instance {info.instance_id}; certificate valid until "
            f"{info.to_dict()['not_after']}"
        )


def _view(config: Path | None, state_dir: Path | None, with_identity: bool) -> View:
    from powernode.agent.view import agent_view  # noqa: PLC0415

    try:
        return agent_view(_config(config, state_dir=state_dir), with_identity)
    except PowernodeError as e:
        raise _fail(e) from e


@app.command()
def introspect(
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    identity: Annotated[bool, typer.Option(help="Run the identity cascade too.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Print the agent's view of itself: identity, certificate expiry, modules, buffer depth."""
    view = _view(config, state_dir, identity)
    if as_json:
        typer.echo(_json(view, indent=2, sort_keys=True))
        return
    _print_summary(view)
    if identity:
        ident = view["identity"]
        if ident.get("resolved"):
            who = ident["identity"]
            typer.echo(f"identity: {who['instance_id']} (from {who['source']})")
        else:
            typer.echo(f"identity: not resolved: {ident.get('error') or ident.get('trail')}")


@app.command()
def status(
    *, config: ConfigOpt = None, state_dir: StateOpt = None, as_json: JsonOpt = False
) -> None:
    """Short summary: enrollment, certificate expiry, buffered events, attached modules."""
    view = _view(config, state_dir, with_identity=False)
    if as_json:
        typer.echo(_json(view, indent=2, sort_keys=True))
        return
    _print_summary(view)


def _print_summary(view: View) -> None:
    cert = view["certificate"]
    if cert is None:
        typer.echo("enrolled: no (run 'powernode-agent enroll --token-file FILE')")
    else:
        state = "EXPIRED" if cert["expired"] else f"{cert['seconds_left'] // 86400} days left"
        due = ", rotation due" if cert["rotation_due"] and not cert["expired"] else ""
        typer.echo(f"enrolled: instance {cert['instance_id']}")
        typer.echo(
            f"certificate: serial {cert['serial']:x}, until {cert['not_after']} ({state}{due})"
        )
    buf = view["buffer"]
    typer.echo(f"buffer: {buf['events']} events, {buf['outcomes']} task outcomes waiting")
    modules = view["modules"]
    if "error" in modules:
        typer.echo(f"modules: {modules['error']}")
    else:
        typer.echo(f"modules: {', '.join(modules) or 'none attached'}")


def _modules() -> Loaded:
    from powernode.cli.agent.modules import app as modules  # noqa: PLC0415 - when it runs

    return modules


app.add_lazy("modules", _modules, "Attach, detach, sync, verify and list this node's modules.")


# Seed 000's top-level surface (attach, detach, update, sync, verify, version, rotate, exec).
register_surface(app)


def lean_imports() -> None:
    """Keep httpx's own command line (``httpx._main``: rich, click, pygments) out of the agent.

    httpx imports it only to offer ``httpx.main`` and falls back when the
    import fails; the agent never uses it, and it costs ~6 MB of RSS on every
    node (bench/bench_agent_rss.py).
    """
    import sys  # noqa: PLC0415

    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        # None in sys.modules makes that import raise ImportError (the import system's rule).
        sys.modules["httpx._main"] = None  # type: ignore[assignment]


def main() -> None:
    lean_imports()
    run(app)
