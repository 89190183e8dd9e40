"""`powernode composefs` commands: composefs_mkimage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this file's commands to `powernode composefs`."""
    del app
