"""Make the mounted union agree with the composition: protected paths, masks, takeovers.

Overlayfs lets the top layer win every path. The composition
(:mod:`powernode.core.compose`, docs/composition.md) can decide otherwise: a
path another module protects is dropped from a higher module, so the owner
wins although it is stacked lower; a carve-out removes a path from the union
altogether. Such a path needs a fix above every module layer, in a *mask
layer* the agent writes itself, from verified images only, into the
generation's directory on the private run tmpfs:

- a path whose winner is not the highest attached module shipping it gets
  the winner's entry: same metadata and xattrs; for external content an
  empty file of the right size carrying ``trusted.overlay.metacopy`` and
  ``trusted.overlay.redirect=/<2hex>/<62hex>``, so overlayfs reads the
  winner's object from the data-only store layer, exactly as the winner's
  own EROFS layer would (Documentation/filesystems/overlayfs.rst,
  "Metadata only copy up", "Data-only lower layers");
- a path dropped with no winner left becomes a whiteout (a 0/0 character
  device, overlayfs's whiteout).

Directories the fixes live in copy the metadata of the highest layer that
has them, so the mask layer never changes a directory's owner or mode.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.core.composition import Composition
from powernode.errors import DataError
from powernode.verity.composefs.plan import metacopy_value
from powernode.verity.composefs.reader import Entry, EntryType, Image

_OVERLAY = b"trusted.overlay."


@dataclass(frozen=True)
class Fix:
    path: str  # relative to the union root, no leading or trailing "/"
    winner: str | None  # module whose entry to show; None: a whiteout


def plan_fixes(composition: Composition, stack: Sequence[str]) -> list[Fix]:
    """Fixes for the attached modules ``stack`` (top first); pure."""
    rank = {name: i for i, name in enumerate(stack)}
    fixes: dict[str, Fix] = {}
    for d in composition.dropped:
        if d.module not in rank:
            continue
        path = d.path.strip("/")
        if not path or path in fixes:
            continue
        entry = composition.entry(d.path)
        if entry is None:
            fixes[path] = Fix(path, None)
            continue
        if entry.is_dir:
            continue  # directories merge; a dropped module's files are dropped one by one
        winner = next((p for p in entry.providers if p in rank), None)
        if winner is None:
            fixes[path] = Fix(path, None)
        elif rank[d.module] < rank[winner]:
            fixes[path] = Fix(path, winner)
    return [fixes[p] for p in sorted(fixes)]


def _apply_meta(path: Path, e: Entry) -> None:
    os.lchown(path, e.uid, e.gid)
    if e.type is not EntryType.SYMLINK:
        os.chmod(path, stat.S_IMODE(e.mode))
    for name, value in e.xattrs.items():
        if not name.startswith(_OVERLAY):
            os.setxattr(path, name, value, follow_symlinks=False)


def _times(path: Path, e: Entry) -> None:
    ns = e.mtime[0] * 1_000_000_000 + e.mtime[1]
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _write_entry(path: Path, e: Entry, image: Image) -> None:
    if e.type is EntryType.FILE:
        if e.payload is not None:
            with path.open("wb") as f:
                f.truncate(e.size)  # sparse: overlayfs takes the size from the metacopy inode
            os.setxattr(path, _OVERLAY + b"metacopy", metacopy_value(e.digest))
            os.setxattr(path, _OVERLAY + b"redirect", b"/" + e.payload)
        else:
            path.write_bytes(image.read_inline(e) if e.size else b"")
    elif e.type is EntryType.SYMLINK:
        os.symlink(e.symlink or b"", path)
    elif e.type is EntryType.DIR:
        path.mkdir()
    else:
        fmt = {
            EntryType.CHAR: stat.S_IFCHR,
            EntryType.BLOCK: stat.S_IFBLK,
            EntryType.FIFO: stat.S_IFIFO,
            EntryType.SOCKET: stat.S_IFSOCK,
        }[e.type]
        os.mknod(path, fmt | stat.S_IMODE(e.mode), e.rdev)
    _apply_meta(path, e)


def build_mask_layer(
    target: Path, fixes: Sequence[Fix], images: Sequence[tuple[str, Image]]
) -> None:
    """Write ``fixes`` under ``target``; ``images`` are (module, parsed image), top first."""
    by_name = dict(images)
    target.mkdir(parents=True)
    made_dirs: list[tuple[Path, Entry]] = []
    for fix in fixes:
        parts = fix.path.split("/")
        for depth in range(1, len(parts)):
            rel = "/".join(parts[:depth])
            d = target / rel
            if d.exists():
                continue
            found = _lookup_first(images, rel)
            d.mkdir()
            if found is not None and found.type is EntryType.DIR:
                _apply_meta(d, found)
                made_dirs.append((d, found))
        dest = target / fix.path
        if fix.winner is None:
            os.mknod(dest, stat.S_IFCHR, os.makedev(0, 0))  # an overlayfs whiteout
            continue
        image = by_name[fix.winner]
        try:
            entry = image.lookup("/" + fix.path)
        except FileNotFoundError as e:
            raise DataError(
                f"composition: {fix.path!r} is won by {fix.winner!r}, whose image does not "
                "ship it; the composition does not match the attached modules: sync again"
            ) from e
        _write_entry(dest, entry, image)
        _times(dest, entry)
    for d, meta in reversed(made_dirs):  # after their children: creating those changed mtime
        _times(d, meta)


def _lookup_first(images: Sequence[tuple[str, Image]], rel: str) -> Entry | None:
    for _, image in images:
        try:
            return image.lookup("/" + rel)
        except FileNotFoundError:
            continue
    return None
