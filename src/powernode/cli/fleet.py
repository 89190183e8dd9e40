"""`powernode fleet …`: a local scaled deployment and the fleet simulator (docs/deploy.md)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.base import App
from powernode.errors import PowernodeError

app = App(
    help="Fleet scale: a local scaled deployment and the fleet simulator.", no_args_is_help=True
)


def _fail(e: PowernodeError) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


@app.command()
def cluster(
    *,
    database: Annotated[
        str,
        typer.Option(
            "--database", envvar="POWERNODE_DATABASE_URL", help="postgresql://… (shared)."
        ),
    ],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Shared data directory.")],
    api: Annotated[int, typer.Option("--api", min=1, max=64, help="API processes.")] = 3,
    workers: Annotated[int, typer.Option("--workers", min=0, max=64, help="Workers.")] = 2,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="haproxy's port.")] = 8443,
) -> None:
    """Start N `platform serve --no-worker`, M `platform worker` and haproxy (TCP) in front.

    Runs until interrupted (Ctrl-C or SIGTERM), then stops every process it started."""
    from powernode.fleet.cluster import Cluster  # noqa: PLC0415

    if not database.startswith("postgresql"):
        raise _fail(PowernodeError(f"--database {database!r}: several processes need PostgreSQL"))
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        with Cluster(database, data_dir, apis=api, workers=workers, port=port) as c:
            typer.echo(
                f"platform at {c.url} (haproxy, TCP) → {api} API processes, {workers} workers"
            )
            typer.echo(f"platform CA (agents pin it): {c.platform_ca}")
            typer.echo(f"logs: {data_dir / 'logs'}")
            while not stopping:
                time.sleep(0.5)
    except PowernodeError as e:
        raise _fail(e) from e
    except KeyboardInterrupt:
        pass


@app.command()
def simulate(
    *,
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=1_000_000)] = 100,
    minutes: Annotated[float, typer.Option("--minutes", min=0.05, max=24 * 60)] = 1.0,
    platform: Annotated[
        str, typer.Option("--platform", envvar="POWERNODE_PLATFORM_URL", help="https://host:port")
    ] = "https://127.0.0.1:8443",
    platform_ca: Annotated[
        Path, typer.Option("--platform-ca", exists=True, dir_okay=False, help="The CA to pin.")
    ] = Path("platform-ca.pem"),
    token: Annotated[
        str, typer.Option("--token", envvar="POWERNODE_TOKEN", help="Operator token (write).")
    ] = "",
    tick: Annotated[float, typer.Option("--tick", min=0.1, help="Seconds between beats.")] = 30.0,
    processes: Annotated[int, typer.Option("--processes", min=1, max=64)] = 2,
    rotate_every: Annotated[
        float, typer.Option("--rotate-every", min=0, help="Rotate every N s (0: at 75 % of life).")
    ] = 0.0,
    events_per_beat: Annotated[
        float, typer.Option("--events-per-beat", min=0, max=500, help="Events a node sends.")
    ] = 0.2,
    database: Annotated[
        str, typer.Option("--database", help="postgresql://… to report the database size.")
    ] = "",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the summary here.")] = None,
) -> None:
    """N simulated agents (the agent's own client) against a platform; a live table, a summary."""
    from powernode.fleet.node import NodeConfig  # noqa: PLC0415
    from powernode.fleet.sim import SimConfig, simulate  # noqa: PLC0415

    if not token:
        raise _fail(PowernodeError("--token (or POWERNODE_TOKEN): an operator token with write"))
    size = _db_size(database) if database else (lambda: 0)
    cfg = SimConfig(
        platform,
        platform_ca,
        token,
        nodes=nodes,
        minutes=minutes,
        tick=tick,
        processes=processes,
        node=NodeConfig(
            rotate_every=rotate_every, events_per_beat=events_per_beat, collect_ids=False
        ),
    )
    summary = simulate(cfg, echo=typer.echo, db_size=size)
    doc = summary.to_json()
    if json_out is not None:
        json_out.write_text(json.dumps(doc, indent=2) + "\n")
    typer.echo(json.dumps({k: doc[k] for k in ("enrolled", "beats", "rotations", "failures")}))
    if summary.failed_requests:
        raise typer.Exit(1)


def _db_size(url: str) -> Callable[[], int]:
    def size() -> int:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    return size
