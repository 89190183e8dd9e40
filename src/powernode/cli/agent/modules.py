"""``powernode-agent modules …``: attach, detach, sync, verify, restore, gc, report modules.

Thin: every command builds the node layout from the agent config (``--root``
overrides ``modules_root``) and calls :mod:`powernode.agent.modules`. Human
output by default, ``--json`` for scripts. Every refusal is printed with its
module, reason, where and what to do; a refusal exits 1, bad usage or
configuration exits 1 with ``error: …`` on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from powernode.cli.base import App
from powernode.errors import PowernodeError

if TYPE_CHECKING:
    from powernode.agent.config import AgentConfig
    from powernode.agent.modules.attach import AttachResult
    from powernode.agent.modules.layout import NodeLayout

app = App(
    name="modules",
    help="Attach, detach, sync, verify and list this node's modules.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="POWERNODE_AGENT_CONFIG", help="Agent config file (TOML)."),
]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="State directory.")]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Where the union is mounted (default modules_root, '/')."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
UnsafeOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-no-signature",
        help="Pull modules without checking any signature (labs only; never on a fleet).",
    ),
]


def _setup(
    config: Path | None, state_dir: Path | None, root: Path | None
) -> tuple[AgentConfig, NodeLayout]:
    from powernode.agent.assemble import load_agent_config, node_layout  # noqa: PLC0415

    cfg = load_agent_config(config, state_dir=state_dir, modules_root=root)
    return cfg, node_layout(cfg)


def _fail(e: PowernodeError) -> typer.Exit:
    from powernode.agent.modules.refusal import ModuleRefused  # noqa: PLC0415

    if isinstance(e, ModuleRefused):
        typer.echo(
            "refused: nothing new was mounted; the union that was serving still is", err=True
        )
        for r in e.refusals:
            typer.echo(f"  {r}", err=True)
        if e.more:
            typer.echo(f"  ... and {e.more} more problem(s)", err=True)
    else:
        typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


def _emit(doc: object) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def _print_result(
    what: str, result: AttachResult, as_json: bool, extra: dict[str, object] | None = None
) -> None:
    doc: dict[str, object] = {
        "generation": result.generation,
        "changed": result.changed,
        "modules": [
            {"name": m.name, "digest": m.digest, "priority": m.priority, "version": m.version}
            for m in result.modules
        ],
        "refused": [r.to_dict() for r in result.refused],
        **(extra or {}),
    }
    if as_json:
        _emit(doc)
        return
    state = f"generation {result.generation}" if result.changed else "unchanged"
    typer.echo(f"{what}: union {state}; top first:")
    for m in result.modules:
        typer.echo(f"  {m.name} {m.version or '-'} priority {m.priority} {m.digest}")
    if not result.modules:
        typer.echo("  (no modules)")
    for r in result.refused:
        typer.echo(f"refused: {r}")


@app.command()
def status(
    *,
    desired: Annotated[
        Path | None, typer.Option("--desired", help="Compare with this desired set (JSON).")
    ] = None,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per module: desired, attached, pulled, verified, mounted, digest, last refusal."""
    from powernode.agent.modules.desired import load_desired_file  # noqa: PLC0415
    from powernode.agent.modules.status import status as module_status  # noqa: PLC0415

    try:
        _, layout = _setup(config, state_dir, root)
        wanted = load_desired_file(desired).modules if desired is not None else None
        rows = module_status(layout, wanted)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit([r.to_dict() for r in rows])
        return
    if not rows:
        typer.echo("no modules attached")
        return
    for r in rows:
        marks = {"attached": r.attached, "pulled": r.pulled, "verified": r.verified}
        flags = [f for f, on in {**marks, "mounted": r.mounted}.items() if on]
        want = "" if r.desired is None else f" desired {r.desired}"
        typer.echo(
            f"{r.name} {r.version or '-'}{want} priority {r.priority}: "
            f"{', '.join(flags) or 'not attached'} {r.digest}"
        )
        if r.refusal:
            typer.echo(f"  refused: {r.refusal}")


@app.command()
def attach(
    ref: Annotated[
        str, typer.Argument(help="REGISTRY/REPOSITORY:TAG (or @sha256:…) or oci:DIR:TAG")
    ],
    *,
    priority: Annotated[int, typer.Option(help="Effective priority (higher wins).")] = 100,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Trust policy: cosign.pub, or a JSON policy file."),
    ] = None,
    plain_http: Annotated[bool, typer.Option("--plain-http", help="Registry over HTTP.")] = False,
    unsafe_no_signature: UnsafeOpt = False,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify REF's signature under the policy, pull it, attach it and restack the union."""
    from powernode.agent.assemble import policy_reader  # noqa: PLC0415
    from powernode.agent.modules.pullref import attach_ref  # noqa: PLC0415
    from powernode.agent.modules.trust import load_policy_file  # noqa: PLC0415
    from powernode.publish.target import open_target  # noqa: PLC0415

    try:
        cfg, layout = _setup(config, state_dir, root)
        trust = None
        if policy is not None:
            reader = policy_reader(cfg)
            trust = load_policy_file(
                policy, roots_pem=reader.roots_pem, signing_time=reader.signing_time
            )
        registry, parsed = open_target(ref, plain_http=plain_http)
        try:
            done = attach_ref(
                layout,
                registry,
                parsed,
                trust,
                priority=priority,
                reference=ref,
                unsafe_no_signature=unsafe_no_signature,
            )
        finally:
            close = getattr(registry, "close", None)
            if close is not None:
                close()
    except PowernodeError as e:
        raise _fail(e) from e
    extra = {
        "attached": done.module.name,
        "bytes_downloaded": done.bytes_downloaded,
        "objects_fetched": done.objects_fetched,
        "objects_reused": done.objects_reused,
    }
    if not as_json:
        typer.echo(
            f"attached {done.module.name} {done.module.version} ({done.module.digest}); "
            f"downloaded {done.bytes_downloaded} bytes, {done.objects_fetched} objects "
            f"({done.objects_reused} already in the store)"
        )
    _print_result("attach", done.result, as_json, extra)


@app.command()
def detach(
    name: Annotated[str, typer.Argument(help="Module name.")],
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a module and restack the union (the others are verified again)."""
    from powernode.agent.modules.attach import detach as detach_module  # noqa: PLC0415

    try:
        _, layout = _setup(config, state_dir, root)
        result = detach_module(layout, name)
    except PowernodeError as e:
        raise _fail(e) from e
    _print_result(f"detached {name}", result, as_json)


@app.command()
def sync(
    *,
    desired: Annotated[
        Path | None,
        typer.Option("--desired", help="Reconcile with this file instead of the platform."),
    ] = None,
    unsafe_no_signature: UnsafeOpt = False,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One reconcile with GET /node_api/modules (or --desired FILE): pull, verify, restack."""
    from powernode.agent.assemble import build_node_client, build_puller  # noqa: PLC0415
    from powernode.agent.modules.desired import load_desired_file, parse_desired  # noqa: PLC0415
    from powernode.agent.modules.reconcile import sync as run_sync  # noqa: PLC0415
    from powernode.agent.modules.service import report_dict  # noqa: PLC0415

    try:
        cfg, layout = _setup(config, state_dir, root)
        if desired is not None:
            wanted = load_desired_file(desired)
        else:
            with build_node_client(cfg) as client:
                wanted = parse_desired(client.modules())
        puller = build_puller(cfg, unsafe_no_signature=unsafe_no_signature)
        report = run_sync(layout, wanted.modules, puller=puller, composition=wanted.composition)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(report_dict(report))
    else:
        for a in report.actions:
            if a.kind != "keep":
                typer.echo(f"{a.kind} {a.module} {a.digest or a.previous}")
        state = f"generation {report.generation}" if report.changed else "unchanged"
        typer.echo(f"sync: union {state}")
        for r in report.refusals:
            typer.echo(f"refused: {r}", err=True)
    if report.refusals:
        raise typer.Exit(1)


@app.command()
def verify(
    target: Annotated[
        str | None,
        typer.Argument(help="An attached module's name, or a path (artifact dir, image, root)."),
    ] = None,
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-verify deeply (image digest, every object re-hashed); exit 0 only if all match."""
    from powernode.agent.modules.verify import verify_attached, verify_path  # noqa: PLC0415

    try:
        _, layout = _setup(config, state_dir, root)
        if target is not None and ("/" in target or target.startswith(".")):
            verdict = verify_path(Path(target), layout)
        else:
            verdict = verify_attached(layout, target)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(
            {
                "path": verdict.path,
                "kind": verdict.kind,
                "ok": verdict.ok,
                "modules": [{"name": n, "digest": d} for n, d in verdict.modules],
                "objects": verdict.objects,
                "refusals": [r.to_dict() for r in verdict.refusals],
                "signature": verdict.signature,
            }
        )
    else:
        for name, digest in verdict.modules:
            typer.echo(f"ok {name} {digest}")
        for r in verdict.refusals:
            typer.echo(f"BAD {r}")
        typer.echo(
            f"{'verified' if verdict.ok else 'FAILED'}: {len(verdict.modules)} module(s), "
            f"{verdict.objects} objects re-hashed"
        )
    raise typer.Exit(verdict.exit_code)


@app.command()
def restore(
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remount the attached modules after a boot, verifying each deeply first."""
    from powernode.agent.modules.attach import restore as restore_modules  # noqa: PLC0415

    try:
        _, layout = _setup(config, state_dir, root)
        result = restore_modules(layout)
    except PowernodeError as e:
        raise _fail(e) from e
    _print_result("restore", result, as_json)
    if result.refused:
        raise typer.Exit(1)


@app.command()
def gc(
    *,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove images, objects and blobs no attached, mounted or rollback version uses."""
    from powernode.agent.modules.gc import collect  # noqa: PLC0415

    try:
        _, layout = _setup(config, state_dir, root)
        report = collect(layout, dry_run=dry_run)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(report.to_dict())
        return
    for digest, why in sorted(report.retained.items(), key=lambda kv: kv[1]):
        typer.echo(f"keep sha256:{digest} {why}")
    verb = "would remove" if dry_run else "removed"
    for digest in report.images:
        typer.echo(f"{verb} image sha256:{digest}")
    typer.echo(
        f"gc: {verb} {len(report.images)} image(s), {report.objects} object(s), "
        f"{report.blobs} blob(s), {report.partials} partial file(s): "
        f"{report.bytes_freed} bytes; {report.kept_objects} object(s) kept"
    )
