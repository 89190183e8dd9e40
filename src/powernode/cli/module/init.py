"""`powernode module init NAME`: scaffold a module repo (manifest, rootfs/, README, CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from powernode.errors import PowernodeError
from powernode.toolchain.scaffold import Ci, init_module


def register(app: typer.Typer) -> None:
    """Add `init` to `powernode module`."""

    @app.command("init")
    def init_cmd(
        name: Annotated[str, typer.Argument(help="The module's name (a lowercase slug).")],
        directory: Annotated[
            Path | None, typer.Option("--dir", help="Where to write it [default: ./NAME].")
        ] = None,
        ci: Annotated[
            str, typer.Option("--ci", help="CI workflow to write: github, gitea or both.")
        ] = "both",
    ) -> None:
        """Write a new module repo that validates and builds as it is."""
        if ci not in ("github", "gitea", "both"):
            typer.echo(f"error: --ci {ci!r}: use github, gitea or both", err=True)
            raise typer.Exit(2)
        try:
            written = init_module(name, directory, ci=cast(Ci, ci))
        except PowernodeError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        for path in written:
            typer.echo(f"wrote {path}")
