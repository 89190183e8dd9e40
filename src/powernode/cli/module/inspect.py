"""`powernode module inspect IMAGE`: the files of a module's composefs image."""

from __future__ import annotations

import json
import os
import stat
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from powernode.cli.composefs.info import ImageArg, load
from powernode.verity.composefs.reader import Entry, EntryType


def object_of(entry: Entry) -> str:
    """Where the content lives: an object name, "inline" (in the image) or ""."""
    if entry.object is not None:
        return entry.object
    if entry.type is EntryType.FILE and entry.inline:
        return "inline"
    return ""


def entry_to_dict(entry: Entry) -> dict[str, object]:
    return {
        "path": entry.path_str,
        "type": entry.type.value,
        "mode": f"{stat.S_IMODE(entry.mode):04o}",
        "uid": entry.uid,
        "gid": entry.gid,
        "size": entry.size,
        "mtime": f"{entry.mtime[0]}.{entry.mtime[1]:09d}",
        "object": object_of(entry) or None,
        "digest": entry.digest.hex() if entry.digest else None,
        "symlink": None if entry.symlink is None else os.fsdecode(entry.symlink),
        "hardlink_to": None if entry.hardlink_to is None else os.fsdecode(entry.hardlink_to),
        "xattrs": {os.fsdecode(k): v.hex() for k, v in entry.xattrs.items()},
    }


def render(entries: list[Entry], console: Console, title: str) -> None:
    table = Table(title=title)
    table.add_column("path", overflow="fold")
    for col in ("type", "mode", "owner"):
        table.add_column(col)
    table.add_column("size", justify="right")
    table.add_column("object", overflow="fold")
    for e in entries:
        target = f" -> {os.fsdecode(e.symlink)}" if e.symlink is not None else ""
        table.add_row(
            Text(e.path_str + target),
            e.type.value,
            stat.filemode(e.mode),
            f"{e.uid}:{e.gid}",
            str(e.size),
            Text(object_of(e)),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `inspect` to `powernode module`."""

    @app.command("inspect")
    def inspect_cmd(
        image: ImageArg,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
    ) -> None:
        """List an image's files: path, type, mode, owner, size and backing object."""
        img, entries = load(image)
        if as_json:
            doc = {
                "image": str(image),
                "composefs": img.is_composefs,
                "format_version": img.header.format_version if img.header else None,
                "entries": [entry_to_dict(e) for e in entries],
            }
            typer.echo(json.dumps(doc, indent=2))
        else:
            render(entries, Console(), f"{image}: {len(entries)} entries")
