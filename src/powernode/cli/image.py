"""`powernode image …`: boot artifacts (kernel, initramfs) built from Debian packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.base import App
from powernode.errors import PowernodeError

app = App(help="Build the node's boot artifacts from Debian packages.", no_args_is_help=True)


@app.command("build")
def build(
    arch: Annotated[str, typer.Option("--arch", help="Debian architecture (amd64).")] = "amd64",
    variant: Annotated[
        str, typer.Option("--variant", help="What to build: kernel-initrd.")
    ] = "kernel-initrd",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory [default: images/<variant>/<arch>]."),
    ] = None,
) -> None:
    """Build VARIANT for ARCH: byte-identical for the same packages and SOURCE_DATE_EPOCH."""
    from powernode.image.build import build as do_build  # noqa: PLC0415 - only when it runs

    try:
        where = do_build(variant, arch, out)
    except PowernodeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo((where / "SHA256SUMS").read_text(), nl=False)
    typer.echo(f"built {variant} for {arch} in {where}")
