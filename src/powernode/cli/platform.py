"""`powernode platform …`: run the control plane and administer it locally.

These commands talk to the database directly (they run on the platform host);
operator actions over the network are under `powernode system …`. The platform
packages are imported inside the commands: `powernode` must start on a node
that installed without the ``platform`` extra.
"""

from __future__ import annotations

import contextlib
import getpass
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from powernode.cli.base import App, LogFormatOpt, configure_logging
from powernode.errors import PowernodeError

if TYPE_CHECKING:
    from powernode.platform.settings import Settings
    from powernode.platform.worker import IngestWorker

app = App(
    help="Run and administer the platform (API server, migrations, tokens).", no_args_is_help=True
)
token_app = App(help="Operator API tokens (scopes: read, write, promote-live).")
app.add_typer(token_app, name="token")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="POWERNODE_CONFIG", help="Settings file (TOML)."),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="sqlite:///PATH or postgresql://… (default: SQLite under the data dir; "
        "env POWERNODE_DATABASE_URL).",
    ),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (env POWERNODE_DATA_DIR).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(e: PowernodeError) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


def _settings(
    config: Path | None, database: str | None, data_dir: Path | None, **kw: object
) -> Settings:
    from powernode.platform.settings import load_settings  # noqa: PLC0415

    settings = load_settings(config, None, database_url=database, data_dir=data_dir, **kw)
    _refuse_missing_sqlite_dir(settings.database_url)
    return settings


def _refuse_missing_sqlite_dir(url: str) -> None:
    """A SQLite URL the user gave must name a file in an existing directory.

    Only the default database under the data directory is created with its
    directory; a typo in ``--database`` must not leave directories behind.
    """
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    from powernode.errors import ConfigError  # noqa: PLC0415

    if not url:
        return
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # make_engine says what a database URL looks like
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    parent = Path(parsed.database).parent
    if not parent.is_dir():
        raise ConfigError(
            f"database {url}: directory {parent} does not exist; create it first "
            "or give --database a path in an existing directory"
        )


@contextlib.contextmanager
def _database_errors(settings: Settings | None) -> Iterator[None]:
    """The database's and the file system's own errors as one line and exit 1.

    An unreachable server, a refused login or an unwritable data directory are
    the user's to fix: say which database or path and what to check, no traceback.
    """
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    try:
        yield
    except PowernodeError as e:
        raise _fail(e) from e
    except SQLAlchemyError as e:
        where = _safe_url(settings.effective_database_url) if settings else "the database"
        cause = getattr(e, "orig", None) or e
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        typer.echo(
            f"error: cannot use the database {where}: {first}; check --database "
            "(or POWERNODE_DATABASE_URL) and that the database server is up",
            err=True,
        )
        raise typer.Exit(1) from e
    except OSError as e:
        what = e.filename or "the data directory"
        typer.echo(
            f"error: {what}: {e.strerror or e}; check --data-dir (or POWERNODE_DATA_DIR)",
            err=True,
        )
        raise typer.Exit(1) from e


def _safe_url(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


@app.command()
def serve(
    *,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8400).")] = None,
    worker: Annotated[
        bool, typer.Option(help="Run the ingest worker in this process (default).")
    ] = True,
    tls: Annotated[
        bool | None,
        typer.Option(
            "--tls/--no-tls",
            help="HTTPS with node client certificates (the node API), or plain HTTP "
            "(default: the tls setting, false).",
        ),
    ] = None,
    log_format: str = LogFormatOpt,
) -> None:
    """Serve the operator API and the node API (migrating the database first).

    Under systemd (Type=notify) it reports READY once it listens and pings the
    watchdog from its event loop (docs/operations.md)."""
    from powernode.platform.app import create_app  # noqa: PLC0415
    from powernode.platform.tlsserve import build_server, server_identity  # noqa: PLC0415
    from powernode.platform.worker import attach, worker_from_settings  # noqa: PLC0415
    from powernode.systemd import Notifier  # noqa: PLC0415

    configure_logging(log_format)

    with _database_errors(None):
        settings = _settings(config, database, data_dir, host=host, port=port, tls=tls)
    with _database_errors(settings):
        api = create_app(settings)
        if worker:
            attach(api, worker_from_settings(settings, api.state.platform.sessions))
        server = build_server(api, settings, notifier=Notifier())
        if settings.tls:
            cert, _, platform_ca = server_identity(settings, now=datetime.now(UTC))
            typer.echo(f"TLS server certificate: {cert}")
            if platform_ca is not None:
                typer.echo(f"platform CA (give it to agents as --platform-ca): {platform_ca}")
    with _database_errors(settings):
        server.run()


@app.command()
def worker(
    *,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    as_json: JsonOpt = False,
    log_format: str = LogFormatOpt,
) -> None:
    """Run the ingest worker alone: poll the registry, verify new tags, run the sensors.

    Under systemd (Type=notify) it reports READY after its first round and pings the
    watchdog from its loop (docs/operations.md)."""
    configure_logging(log_format)
    from powernode.platform.db.migrate import upgrade  # noqa: PLC0415
    from powernode.platform.db.session import make_engine, make_sessionmaker  # noqa: PLC0415
    from powernode.platform.worker import worker_from_settings  # noqa: PLC0415

    with _database_errors(None):
        settings = _settings(config, database, data_dir)
    with _database_errors(settings):
        engine = make_engine(
            settings.effective_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_overflow,
        )
    try:
        with _database_errors(settings):
            upgrade(engine)
            runner = worker_from_settings(settings, make_sessionmaker(engine))
            _run_worker(runner, once=once, as_json=as_json)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()


def _run_worker(runner: IngestWorker, *, once: bool, as_json: bool) -> None:
    import dataclasses  # noqa: PLC0415

    if once:
        report = runner.run_once()
        if as_json:
            typer.echo(json.dumps(dataclasses.asdict(report)))
        else:
            typer.echo(", ".join(f"{k} {v}" for k, v in dataclasses.asdict(report).items()))
    else:
        from powernode.systemd import Notifier  # noqa: PLC0415

        runner.run(notifier=Notifier())


@app.command()
def migrate(
    *,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or upgrade the database schema (idempotent)."""
    from powernode.platform.db.migrate import current_revisions, upgrade  # noqa: PLC0415
    from powernode.platform.db.session import make_engine  # noqa: PLC0415

    with _database_errors(None):
        settings = _settings(config, database, data_dir)
    with _database_errors(settings):
        engine = make_engine(
            settings.effective_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_overflow,
        )
    try:
        with _database_errors(settings):
            before = ",".join(current_revisions(engine)) or None
            upgrade(engine)
            after = ",".join(current_revisions(engine))
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"from": before, "to": after}))
    else:
        typer.echo(f"database at revision {after} (was {before or 'empty'})")


@token_app.command("create")
def token_create(
    *,
    name: Annotated[str, typer.Option(help="Who or what uses the token, e.g. ci or alice.")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="read, write or promote-live (repeat).")
    ],
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many days.")
    ] = None,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token; its secret is printed once and never stored."""
    from powernode.platform.db.migrate import upgrade  # noqa: PLC0415
    from powernode.platform.db.session import make_engine, write_session  # noqa: PLC0415
    from powernode.platform.services.context import SCOPES, Actor, Ctx  # noqa: PLC0415
    from powernode.platform.services.tokens import create_token  # noqa: PLC0415

    now = datetime.now(UTC)
    expires = now + timedelta(days=expires_in_days) if expires_in_days else None
    with _database_errors(None):
        settings = _settings(config, database, data_dir)
    with _database_errors(settings):
        engine = make_engine(
            settings.effective_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_overflow,
        )
    try:
        with _database_errors(settings):
            upgrade(engine)
            with write_session(engine) as session:
                admin = Actor(f"local:{getpass.getuser()}", None, frozenset(SCOPES))
                ctx = Ctx(session, admin, now)
                token, secret = create_token(ctx, name, scope, expires_at=expires)
                session.commit()
    finally:
        engine.dispose()
    if as_json:
        out = {"id": token.id, "name": name, "scopes": token.scopes.split(), "token": secret}
        typer.echo(json.dumps(out))
    else:
        typer.echo(f"token {name} ({token.scopes}) id {token.id}")
        typer.echo("secret (shown once; use as POWERNODE_TOKEN):")
        typer.echo(secret)
