"""`powernode verity …` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="verity commands.", no_args_is_help=True)
