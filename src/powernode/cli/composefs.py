"""`powernode composefs …` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="composefs commands.", no_args_is_help=True)
