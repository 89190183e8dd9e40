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

_MAX_WORKERS = 64  # scan_tree's limit


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


def _workers(threads: int | None, *, store: bool) -> dict[str, int]:
    """build_image's worker arguments for ``--threads``.

    Without a store the files are digested on that many processes (the
    digest is most of the work; processes do not share a GIL). With a store
    each file is read once and staged by one process, so ``--threads`` means
    reader threads there, which pay only with a cold page cache
    (docs/composefs.md, "Speed").
    """
    if store:
        return {"threads": threads or 0}
    if threads is None:
        threads = min(len(os.sched_getaffinity(0)), _MAX_WORKERS)
    return {"processes": threads}


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
        threads: Annotated[
            int | None,
            typer.Option(
                "--threads",
                help="Digest workers: processes without --digest-store (default: the usable "
                "CPUs), reader threads with it (default: none, the files are read in turn).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Write the composefs image of SRC to IMAGE (mkcomposefs-compatible bytes)."""
        if image is None and not print_digest_only:
            typer.echo("error: give IMAGE, or --print-digest-only to only compute it", err=True)
            raise typer.Exit(2)
        if image is not None and print_digest_only:
            typer.echo("error: --print-digest-only writes no image; drop IMAGE", err=True)
            raise typer.Exit(2)
        if threads is not None and not 1 <= threads <= _MAX_WORKERS:
            typer.echo(
                f"error: --threads must be from 1 to {_MAX_WORKERS}, not {threads}", err=True
            )
            raise typer.Exit(2)
        workers = _workers(threads, store=digest_store is not None)
        try:
            policy = TreePolicy(
                allow_devices=allow_devices,
                allow_setuid=allow_setuid,
                source_date_epoch=_source_date_epoch(),
                use_epoch=use_epoch,
            )
            result = build_image(src, image, digest_store=digest_store, policy=policy, **workers)
        except PowernodeError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        if print_digest or print_digest_only:
            typer.echo(result.digest)
