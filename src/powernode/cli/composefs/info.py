"""`powernode composefs info ls|objects|dump IMAGE`: what an image holds.

Shaped like composefs' ``composefs-info``: ``ls`` lists paths, ``objects`` the
backing object names, ``dump`` composefs-dump(5) lines. The whole image is
read and checked before anything is printed, so a corrupt image gives one
error line and exit status 1, never a partial listing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.base import App
from powernode.errors import ImageFormatError
from powernode.verity.composefs.reader import Entry, EntryType, Image, open_image
from powernode.verity.composefs.reader.dump import dump_line, ls_line, wants_content

ImageArg = Annotated[Path, typer.Argument(help="A composefs or plain EROFS image file.")]
RawOpt = Annotated[
    bool,
    typer.Option("--raw", help="Show composefs internals (root stubs, overlay xattrs) as stored."),
]


def load(image: Path, *, raw: bool = False) -> tuple[Image, list[Entry]]:
    """Open and fully walk ``image``; on failure print one line and exit 1."""
    try:
        img = open_image(image, raw=raw)
        return img, img.entries()
    except ImageFormatError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except OSError as e:
        typer.echo(f"error: {image}: cannot read the image: {e.strerror or e}", err=True)
        raise typer.Exit(1) from e


def register(app: typer.Typer) -> None:
    """Add `info` to `powernode composefs`."""
    info = App(help="List what a composefs image holds (like composefs-info).")

    @info.command("ls")
    def ls_cmd(
        image: ImageArg,
        raw: RawOpt = False,
    ) -> None:
        """List every path; directories end in '/', symlinks show '->', files '@ object'."""
        _, entries = load(image, raw=raw)
        for entry in entries:
            line = ls_line(entry)
            if line is not None:
                typer.echo(line)

    @info.command("objects")
    def objects_cmd(image: ImageArg) -> None:
        """List the backing object names (xx/62hex) the image's files point at."""
        _, entries = load(image)
        names = {e.object for e in entries if e.object and e.type is EntryType.FILE}
        for name in sorted(names):
            typer.echo(name)

    @info.command("dump")
    def dump_cmd(
        image: ImageArg,
        raw: RawOpt = False,
    ) -> None:
        """Print composefs-dump(5) lines: PATH SIZE MODE NLINK UID GID RDEV MTIME ...

        What ``composefs-info dump`` prints, xattrs in its order (on-disk: inline,
        then shared) with the opaque markers it shows; ``--raw`` every xattr as stored.
        """
        img, entries = load(image, raw=raw)
        try:
            lines = [
                dump_line(e, img.read_inline(e) if wants_content(e) else None, img.info_xattrs(e))
                for e in entries
            ]
        except ImageFormatError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        for line in lines:
            typer.echo(line)

    app.add_typer(info, name="info", no_args_is_help=True)
