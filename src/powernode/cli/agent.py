"""`powernode-agent`: the node agent's command line."""

from __future__ import annotations

import typer

from powernode import __version__

app = typer.Typer(
    name="powernode-agent",
    help="The powernode node agent.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the agent's version."""
    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """Keep `version` a subcommand even while it is the only one."""


def main() -> None:
    app()
