"""`powernode composefs mkimage SRC [IMAGE]`: write a composefs image, like mkcomposefs.

Byte-identical to ``mkcomposefs SRC IMAGE`` of composefs 1.0.8 for the same
tree (docs/composefs.md). ``SOURCE_DATE_EPOCH`` from the environment clamps
newer mtimes so rebuilding the same tree gives the same digest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from powernode.errors import ConfigError, PowernodeError
from powernode.verity.composefs.scan import TreePolicy
from powernode.verity.composefs.writer import build_image


def _source_date_epoch() -> int | None:
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as e:
        raise ConfigError(
            f"SOURCE_DATE_EPOCH={raw!r} is not an integer number of seconds; fix or unset it"
        ) from e
    if value < 0:
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw} is negative; fix or unset it")
    return value


def register(app: typer.Typer) -> None:
    """Add `mkimage` to `powernode composefs`."""

    @app.command("mkimage")
    def mkimage(
        src: Annotated[Path, typer.Argument(help="Directory to turn into an image.")],
        image: Annotated[
            Path | None, typer.Argument(help="Image file to write (atomically).")
        ] = None,
        *,
        digest_store: Annotated[
            Path | None,
            typer.Option("--digest-store", help="Copy file contents here as hh/<62hex> objects."),
        ] = None,
        print_digest: Annotated[
            bool, typer.Option("--print-digest", help="Print the image's fs-verity digest.")
        ] = False,
        print_digest_only: Annotated[
            bool,
            typer.Option("--print-digest-only", help="Print the digest, write no image."),
        ] = False,
        use_epoch: Annotated[
            bool, typer.Option("--use-epoch", help="Set every mtime to 0 (the epoch).")
        ] = False,
        allow_devices: Annotated[
            bool, typer.Option("--allow-devices", help="Accept device nodes (allow.devices).")
        ] = False,
        allow_setuid: Annotated[
            bool,
            typer.Option("--allow-setuid", help="Accept setuid/setgid files (allow.setuid)."),
        ] = False,
    ) -> None:
        """Write the composefs image of SRC to IMAGE (mkcomposefs-compatible bytes)."""
        if image is None and not print_digest_only:
            typer.echo("error: give IMAGE, or --print-digest-only to only compute it", err=True)
            raise typer.Exit(2)
        if image is not None and print_digest_only:
            typer.echo("error: --print-digest-only writes no image; drop IMAGE", err=True)
            raise typer.Exit(2)
        try:
            policy = TreePolicy(
                allow_devices=allow_devices,
                allow_setuid=allow_setuid,
                source_date_epoch=_source_date_epoch(),
                use_epoch=use_epoch,
            )
            result = build_image(src, image, digest_store=digest_store, policy=policy)
        except PowernodeError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        if print_digest or print_digest_only:
            typer.echo(result.digest)
