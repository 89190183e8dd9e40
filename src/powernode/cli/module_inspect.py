"""`powernode module` commands: module_inspect."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this file's commands to `powernode module`."""
    del app
