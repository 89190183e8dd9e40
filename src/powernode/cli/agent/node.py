"""``powernode-agent verify | version | rotate | exec | init | commit``: seed 000's node commands.

Thin, as the other agent commands: parse, call :mod:`powernode.agent`, print.
Exit status: 0 good, 1 refused or failed (``verify``: the verdict).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.agent.modules import ConfigOpt, JsonOpt, RootOpt, StateOpt
from powernode.errors import PowernodeError


def _emit(doc: object) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def _fail(e: PowernodeError) -> typer.Exit:
    from powernode.cli.agent.modules import _fail as modules_fail  # noqa: PLC0415

    return modules_fail(e)


def verify(
    target: Annotated[
        str | None,
        typer.Argument(
            help="oci:DIR:TAG (signature and content), an artifact directory, a store image "
            "(images/<hex>.cfs), the node root, a mounted module layer, or an attached "
            "module's name; none: every attached module."
        ),
    ] = None,
    *,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Trust policy (cosign.pub or JSON) for an oci: target."),
    ] = None,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify signature and digests; the exit status is the verdict (0 good, 1 bad)."""
    from powernode.agent.verifypath import verify_target  # noqa: PLC0415
    from powernode.cli.agent.modules import _setup  # noqa: PLC0415

    try:
        _, layout = _setup(config, state_dir, root)
        verdict = verify_target(target, layout, policy)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(verdict.to_dict())
    else:
        for line in verdict.lines():
            typer.echo(line)
    raise typer.Exit(0 if verdict.ok else 1)


def version(as_json: JsonOpt = False) -> None:
    """Print the agent's version, git SHA, build date and Python version."""
    from powernode.buildinfo import read  # noqa: PLC0415

    info = read()
    if as_json:
        _emit(info.to_dict())
    else:
        typer.echo(info.line())


def rotate(
    *, config: ConfigOpt = None, state_dir: StateOpt = None, as_json: JsonOpt = False
) -> None:
    """Rotate the node certificate now: new key, POST /node_api/certificates/rotate, install.

    The old certificate is archived; a running service picks the new one up on its next beat.
    """
    from powernode.agent.assemble import build_node_client, load_agent_config  # noqa: PLC0415
    from powernode.agent.certstore import CertStore  # noqa: PLC0415
    from powernode.agent.lifecycle import SystemClock  # noqa: PLC0415
    from powernode.agent.manualrotate import rotate_now  # noqa: PLC0415

    try:
        cfg = load_agent_config(config, state_dir=state_dir)
        store = CertStore(cfg.pki_dir)
        with build_node_client(cfg) as client:
            doc = rotate_now(store, client, SystemClock().now())
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(doc)
    else:
        typer.echo(
            f"rotated: serial {doc['old_serial']} -> {doc['new_serial']}, "
            f"valid until {doc['not_after']}"
        )


def exec_script(
    target: Annotated[
        str, typer.Argument(help="NodeScript name (fetched from the platform) or a signed file.")
    ],
    *,
    version: Annotated[int | None, typer.Option("--version", help="Default: newest.")] = None,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch a NodeScript, verify its signature, run it confined; exit with its exit code."""
    from powernode.agent.assemble import build_node_client, load_agent_config  # noqa: PLC0415
    from powernode.agent.nodescripts import load_keys, run_script  # noqa: PLC0415
    from powernode.agent.tasks import TaskError  # noqa: PLC0415
    from powernode.errors import DataError  # noqa: PLC0415
    from powernode.signing.nodescript import parse  # noqa: PLC0415

    try:
        cfg = load_agent_config(config, state_dir=state_dir)
        path = Path(target)
        if "/" in target or path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: not a NodeScript document ({e})") from e
        else:
            query = f"?version={version}" if version is not None else ""
            with build_node_client(cfg) as client:
                raw = client._request("GET", f"/nodescripts/{target}{query}", None, idempotent=True)
            doc = json.loads(raw)["nodescript"]
        result = run_script(parse(doc), load_keys(cfg.nodescript_keys_file))
    except TaskError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(result)
    else:
        typer.echo(result["stdout"], nl=False)
        typer.echo(result["stderr"], nl=False, err=True)
        if result["timed_out"]:
            typer.echo(f"killed after {result['timeout_seconds']} s (timeout)", err=True)
    code = result["exit_code"]
    raise typer.Exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


def volume_setup(
    *,
    layout: Annotated[Path, typer.Option("--layout", help="The declared layout (JSON or TOML).")],
    force: Annotated[
        bool, typer.Option("--force", help="Wipe disks holding what this did not make.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Partition and format disks from a declared layout; idempotent, refuses foreign disks."""
    from powernode.agent.volumes import load_layout  # noqa: PLC0415
    from powernode.agent.volumes import volume_setup as setup  # noqa: PLC0415

    try:
        reports = setup(load_layout(layout), force=force)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(
            [{"device": r.device, "action": r.action, "partitions": r.partitions} for r in reports]
        )
        return
    for r in reports:
        typer.echo(f"{r.device}: {r.action}")
        for p in r.partitions:
            verity = " verity" if p["verity"] and p["filesystem"] == "ext4" else ""
            typer.echo(f"  {p['name']} {p['device']} {p['filesystem']}{verity}")


def init(
    module: Annotated[str, typer.Argument(help="An attached module's name.")],
    action: Annotated[str, typer.Argument(help="One of its init actions (manifest).")],
    *,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a module's init action now (manifest init_actions); exit with its exit code."""
    from powernode.agent.initactions import run_named  # noqa: PLC0415
    from powernode.cli.agent.modules import _setup  # noqa: PLC0415

    try:
        _, layout = _setup(config, state_dir, root)
        result = run_named(layout, module, action)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(result)
    else:
        typer.echo(result["stdout"], nl=False)
        typer.echo(result["stderr"], nl=False, err=True)
    code = result["exit_code"]
    raise typer.Exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


def commit(
    module: Annotated[str, typer.Argument(help="An attached instance-variety module.")],
    *,
    version: Annotated[str, typer.Option("--version", help="The new version's number.")],
    out: Annotated[Path, typer.Option("--out", help="Artifact directory to write (new).")],
    source_date_epoch: Annotated[
        int, typer.Option("--source-date-epoch", help="Timestamps of the build.")
    ] = 0,
    push: Annotated[
        str | None,
        typer.Option(
            "--push", help="oci:DIR:TAG or registry/repo:tag: push, sign with the node key."
        ),
    ] = None,
    announce: Annotated[
        bool,
        typer.Option(
            "--announce/--no-announce",
            help="After --push, have the platform record the version (built, this instance's).",
        ),
    ] = True,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an instance-variety module's persistent changes as a new version (artifact dir).

    With --push, push and sign it with the node key and announce it to the platform."""
    from powernode.agent.assemble import build_node_client  # noqa: PLC0415
    from powernode.agent.certstore import CertStore  # noqa: PLC0415
    from powernode.agent.commit import announce as announce_version  # noqa: PLC0415
    from powernode.agent.commit import announcement, push_signed  # noqa: PLC0415
    from powernode.agent.commit import commit as commit_module  # noqa: PLC0415
    from powernode.cli.agent.modules import _setup  # noqa: PLC0415

    recorded = None
    try:
        cfg, layout = _setup(config, state_dir, root)
        done = commit_module(
            layout, module, version=version, out=out, source_date_epoch=source_date_epoch
        )
        pki = CertStore(cfg.pki_dir)
        pushed = push_signed(pki, out, push) if push else None
        if pushed is not None and announce:
            request = announcement(pki, done, pushed)
            try:
                with build_node_client(cfg) as client:
                    recorded = announce_version(client, request)
            except PowernodeError as e:
                typer.echo(
                    f"pushed {pushed.pinned}, signed by the node, but the platform did not "
                    "record it (run the same commit again to retry the announcement):",
                    err=True,
                )
                raise _fail(e) from e
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit(
            {
                **done.to_dict(),
                "pushed": pushed.to_dict() if pushed else None,
                "recorded": recorded.to_json() if recorded else None,
            }
        )
        return
    if pushed is not None:
        typer.echo(f"pushed {pushed.reference} {pushed.manifest_digest}, signed by the node")
    d = done.delta
    typer.echo(
        f"{done.module} {done.version}: {done.composefs_digest} in {done.out} "
        f"({len(d.changed)} changed, {len(d.deleted)} deleted, {len(d.opaque)} replaced)"
    )
    if recorded is not None:
        again = "" if recorded.created else " (recorded before)"
        typer.echo(
            f"platform recorded {recorded.module} {recorded.version} as "
            f"{recorded.promotion_state}, made by instance {recorded.committed_by_instance_id} "
            f"(version id {recorded.version_id}){again}"
        )


def puppet(
    action: Annotated[str, typer.Argument(help="apply")],
    module: Annotated[str, typer.Argument(help="An attached module shipping the manifest.")],
    path: Annotated[
        str | None,
        typer.Argument(help="The manifest in the module (default /etc/puppet/manifests/M.pp)."),
    ] = None,
    *,
    noop: Annotated[bool, typer.Option("--noop", help="Report what would change.")] = False,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """puppet apply a module's manifest; its report becomes fleet events (exit 1 if it failed)."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from powernode.agent.puppet import apply  # noqa: PLC0415
    from powernode.agent.spool import Spool  # noqa: PLC0415
    from powernode.cli.agent.modules import _setup  # noqa: PLC0415
    from powernode.errors import ConfigError  # noqa: PLC0415

    try:
        if action != "apply":
            raise ConfigError(f"puppet {action!r}: the one action is 'apply'")
        cfg, layout = _setup(config, state_dir, root)
        run = apply(layout, module, path, noop=noop)
        spool = Spool(cfg.spool_file, max_events=cfg.spool_max_events)
        try:
            for kind, severity, payload in run.events:
                spool.append(kind, severity, payload, datetime.now(UTC))
        finally:
            spool.close()
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        _emit({"status": run.status, "exit_code": run.exit_code, "events": run.events})
    else:
        typer.echo(f"puppet apply {run.module} {run.manifest}: {run.status} (exit {run.exit_code})")
    raise typer.Exit(0 if run.ok else 1)
