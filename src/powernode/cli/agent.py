"""`powernode-agent`: the node agent's command line (seed 000's subcommands, those built so far).

``service`` runs the loop until SIGTERM and exits 0 after the drain;
``enroll`` exchanges a bootstrap token for the node's certificate;
``introspect`` prints the agent's view of itself (identity, certificate,
modules, buffer), ``status`` a short summary, ``version`` the version.
Only this module prints or exits; errors go to stderr with exit status 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from powernode import __version__
from powernode.cli.agent_surface import register as register_surface
from powernode.cli.base import App, LogFormatOpt, configure_logging, run
from powernode.errors import PowernodeError

app = App(
    name="powernode-agent",
    help="The powernode node agent.",
    no_args_is_help=True,
    add_completion=False,
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


def _config(config: Path | None, **overrides: Any) -> Any:
    from powernode.agent.config import DEFAULT_CONFIG_FILE, load_config  # noqa: PLC0415

    if config is None and DEFAULT_CONFIG_FILE.exists():
        config = DEFAULT_CONFIG_FILE
    return load_config(config, None, **overrides)


def _logging(verbose: bool, fmt: str = "text") -> None:
    configure_logging(fmt, verbose=verbose)


def _json(doc: Any, **kw: Any) -> str:
    import json  # noqa: PLC0415 - not on --help's path (bench/bench_cli_start.py)

    return json.dumps(doc, **kw)


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
    from powernode.agent.certstore import CertStore, Credentials  # noqa: PLC0415
    from powernode.agent.lifecycle import (  # noqa: PLC0415
        StopSignal,
        SystemClock,
        install_signal_handlers,
    )
    from powernode.agent.nodetasks import register_node_tasks  # noqa: PLC0415
    from powernode.agent.runtime import HostFacts, Runtime  # noqa: PLC0415
    from powernode.agent.security import harden  # noqa: PLC0415
    from powernode.agent.spool import Spool  # noqa: PLC0415
    from powernode.agent.tasks import ThreadExecutor, default_registry  # noqa: PLC0415
    from powernode.agent.transport import Backoff, NodeClient, tls_context  # noqa: PLC0415
    from powernode.systemd import Notifier  # noqa: PLC0415

    _logging(verbose, log_format)
    try:
        cfg = _config(config, state_dir=state_dir, platform_url=platform_url)
        url = cfg.require_platform()
        if cfg.confine_self:
            harden()  # capabilities, seccomp, no-new-privileges (agent/security.py)
        clock = SystemClock()
        stop = StopSignal()
        install_signal_handlers(stop)

        def client_factory(creds: Credentials) -> NodeClient:
            return NodeClient(
                url,
                tls=tls_context(creds.platform_ca_file, creds.cert_file, creds.key_file),
                clock=clock,
                stop=stop.event,
                backoff=Backoff(cfg.backoff_base_seconds, cfg.backoff_cap_seconds),
                attempts=cfg.request_attempts,
                timeout=cfg.request_timeout_seconds,
                max_response_bytes=cfg.max_response_bytes,
            )

        spool = Spool(
            cfg.spool_file,
            max_events=cfg.spool_max_events,
            max_payload_bytes=cfg.event_max_payload_bytes,
        )
        layout, modules = _module_service(cfg, spool, clock)
        tasks = default_registry()
        store = CertStore(cfg.pki_dir)
        runtime = Runtime(
            cfg,
            store=store,
            spool=spool,
            client_factory=client_factory,
            executor=ThreadExecutor(tasks, cfg.max_in_flight),
            clock=clock,
            stop=stop,
            facts=HostFacts(cfg.host_root, cfg.modules_dir, layout),
            modules=modules,
            notifier=Notifier(),
        )
        tasks.register("modules.sync", runtime.modules_task)
        register_node_tasks(
            tasks,
            cfg=cfg,
            store=store,
            creds=lambda: runtime.creds,
            factory=client_factory,
            clock=clock,
        )
        code = runtime.run()
        spool.close()
    except PowernodeError as e:
        raise _fail(e) from e
    raise typer.Exit(code)


def _module_service(cfg: Any, spool: Any, clock: Any) -> tuple[Any, Any]:
    """The node layout and the module service the loop restores and syncs."""
    from powernode.agent.modules.layout import NodeLayout  # noqa: PLC0415
    from powernode.agent.modules.reconcile import PublishPuller  # noqa: PLC0415
    from powernode.agent.modules.service import ModuleService  # noqa: PLC0415
    from powernode.agent.modules.trust import PolicyReader  # noqa: PLC0415

    layout = NodeLayout(
        root=cfg.modules_root.absolute(), state=cfg.state_dir.absolute(), upper=cfg.modules_upper
    )
    reader = PolicyReader.from_file(
        cfg.cosign_roots_file,
        cfg.cosign_tlog_keys_file,
        insecure_ignore_tlog=cfg.cosign_insecure_ignore_tlog,
        clock=clock.now,
    )
    puller = PublishPuller(policies=reader, default_registry=cfg.modules_registry)

    def emit(kind: str, severity: str, payload: dict[str, Any]) -> None:
        spool.append(kind, severity, payload, clock.now())

    return layout, ModuleService(layout, puller, emit)


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

    from powernode.agent import enroll as enrolling  # noqa: PLC0415
    from powernode.agent.certstore import CertStore  # noqa: PLC0415
    from powernode.agent.lifecycle import SystemClock  # noqa: PLC0415
    from powernode.agent.transport import NodeClient, tls_context  # noqa: PLC0415
    from powernode.errors import ConfigError  # noqa: PLC0415

    _logging(verbose)
    try:
        cfg = _config(config, state_dir=state_dir, platform_url=platform_url)
        url = cfg.require_platform()
        if token_file is not None:
            where = "stdin" if str(token_file) == "-" else str(token_file)
            try:
                token = sys.stdin.read(8192) if where == "stdin" else token_file.read_text()
            except OSError as e:
                raise ConfigError(f"{token_file}: cannot read the token: {e.strerror}") from e
        else:
            where = "POWERNODE_AGENT_BOOTSTRAP_TOKEN"
            token = os.environ.get(where, "")
            if not token:
                raise ConfigError(
                    "no bootstrap token: pass --token-file FILE (or '-' for stdin) or set "
                    "POWERNODE_AGENT_BOOTSTRAP_TOKEN"
                )
        token = enrolling.check_token(token, where)
        ca_file = platform_ca or cfg.platform_ca_file
        if ca_file is None:
            raise ConfigError(
                "no platform CA: pass --platform-ca FILE (the PEM the platform's TLS "
                "certificate chains to) or set platform_ca_file in the agent config"
            )
        try:
            ca_pem = ca_file.read_bytes()
        except OSError as e:
            raise ConfigError(f"{ca_file}: cannot read the platform CA: {e.strerror}") from e
        hint = _discover(cfg)["identity"]["instance_id"] if discover else ""
        clock = SystemClock()
        with NodeClient(url, tls=tls_context(ca_file), clock=clock) as client:
            info = enrolling.enroll(
                CertStore(cfg.pki_dir),
                client,
                token,
                platform_ca_pem=ca_pem,
                now=clock.now(),
                instance_hint=hint or "",
                force=force,
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


def _discover(cfg: Any) -> dict[str, Any]:
    """The identity cascade's verdict as JSON-ready data (never raises)."""
    try:
        from powernode.agent.identity.cascade import discover_identity  # noqa: PLC0415
        from powernode.agent.identity.config import IdentityConfig  # noqa: PLC0415
        from powernode.agent.identity.model import UnresolvableIdentityError  # noqa: PLC0415
    except ImportError as e:  # identity is built in parallel; keep the agent usable
        return {"resolved": False, "identity": {"instance_id": ""}, "error": str(e)}
    try:
        result = discover_identity(
            IdentityConfig(root=cfg.host_root, identity_file=cfg.state_dir / "identity.cfg")
        )
    except UnresolvableIdentityError as e:
        doc = e.to_dict()
        doc["identity"] = {"instance_id": ""}
        return doc
    except PowernodeError as e:
        return {"resolved": False, "identity": {"instance_id": ""}, "error": str(e)}
    return result.to_dict()


def _view(cfg: Any, with_identity: bool) -> dict[str, Any]:
    from powernode.agent.certstore import CertStore  # noqa: PLC0415
    from powernode.agent.modules.state import StateFile  # noqa: PLC0415
    from powernode.agent.rotation import rotation_due  # noqa: PLC0415
    from powernode.agent.spool import read_depths  # noqa: PLC0415

    store = CertStore(cfg.pki_dir)
    info = store.info()
    cert: dict[str, Any] | None = None
    if info is not None:
        from powernode.agent.lifecycle import SystemClock  # noqa: PLC0415

        now = SystemClock().now()
        lifetime = info.not_after - info.not_before
        cert = {
            **info.to_dict(),
            "rotate_after": (info.not_before + lifetime * cfg.rotate_at_fraction).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "rotation_due": rotation_due(info, now, cfg.rotate_at_fraction),
            "expired": now >= info.not_after,
            "seconds_left": max(0, int((info.not_after - now).total_seconds())),
            "archived": [p.name for p in store.archived()],
        }
    depths = read_depths(cfg.spool_file) or (0, 0)
    try:
        state = StateFile(cfg.modules_dir).load()
        modules: Any = {
            name: {"digest": m.digest, "priority": m.priority, "version": m.version}
            for name, m in sorted(state.modules.items())
        }
    except PowernodeError as e:
        modules = {"error": str(e)}
    view: dict[str, Any] = {
        "agent_version": __version__,
        "platform_url": cfg.platform_url,
        "state_dir": str(cfg.state_dir),
        "enrolled": info is not None,
        "certificate": cert,
        "modules": modules,
        "buffer": {"events": depths[0], "outcomes": depths[1]},
    }
    if with_identity:
        view["identity"] = _discover(cfg)
    return view


@app.command()
def introspect(
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    identity: Annotated[bool, typer.Option(help="Run the identity cascade too.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Print the agent's view of itself: identity, certificate expiry, modules, buffer depth."""
    try:
        view = _view(_config(config, state_dir=state_dir), identity)
    except PowernodeError as e:
        raise _fail(e) from e
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
    try:
        view = _view(_config(config, state_dir=state_dir), with_identity=False)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(_json(view, indent=2, sort_keys=True))
        return
    _print_summary(view)


def _print_summary(view: dict[str, Any]) -> None:
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


app.add_lazy(
    "modules",
    "powernode.cli.agent_modules:app",
    "Attach, detach, sync, verify and list this node's modules.",
)


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
