"""`powernode`: the operator's and module author's command line."""

from __future__ import annotations

import logging

import typer

from powernode import __version__
from powernode.cli.composefs import app as composefs_app
from powernode.cli.demo import demo
from powernode.cli.module import app as module_app
from powernode.cli.platform import register as register_platform
from powernode.cli.verity import app as verity_app

app = typer.Typer(
    name="powernode",
    help="Fleet platform for immutable Linux nodes composed from signed modules.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(module_app, name="module")
register_platform(app)  # adds `platform` and `system`
app.add_typer(verity_app, name="verity")
app.add_typer(composefs_app, name="composefs")
app.command("demo")(demo)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


@app.command()
def version() -> None:
    """Print powernode's version."""
    typer.echo(__version__)


def main() -> None:
    app()
