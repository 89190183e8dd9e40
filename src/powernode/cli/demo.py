"""`powernode demo`: the main job on embedded defaults."""

from __future__ import annotations

import typer


def demo() -> None:
    """Run the demo."""
    typer.echo("demo: not yet")
