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

from powernode.agent.beneath import FILE_FLAGS, Beneath, at
from powernode.agent.pathcheck import check_node_path, node_path_segments
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
    """Fixes for the attached modules ``stack`` (top first); pure.

    Every dropped path is checked (absolute, normalised, bounded:
    :func:`~powernode.agent.pathcheck.check_node_path`) whoever built the
    composition; DataError names the entry.
    """
    rank = {name: i for i, name in enumerate(stack)}
    fixes: dict[str, Fix] = {}
    for i, d in enumerate(composition.dropped):
        check_node_path(d.path, f"composition: dropped[{i}].path")
        if d.module not in rank:
            continue
        path = "/".join(node_path_segments(d.path))
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


# Every call below works on (parent directory descriptor, name) from a Beneath
# walk, never on a path the kernel would resolve through links (issue 13, item 7).


def _apply_meta(parent: int, name: str, e: Entry) -> None:
    os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
    if e.type is not EntryType.SYMLINK:
        os.chmod(name, stat.S_IMODE(e.mode), dir_fd=parent)  # just made here: not a link
    for key, value in e.xattrs.items():
        if not key.startswith(_OVERLAY):
            os.setxattr(at(parent, name), key, value, follow_symlinks=False)


def _times(parent: int, name: str, e: Entry) -> None:
    ns = e.mtime[0] * 1_000_000_000 + e.mtime[1]
    os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)


def _write_entry(parent: int, name: str, e: Entry, image: Image) -> None:
    if e.type is EntryType.FILE:
        fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            if e.payload is not None:
                os.ftruncate(fd, e.size)  # sparse: overlayfs takes the size from the metacopy
                os.setxattr(fd, _OVERLAY + b"metacopy", metacopy_value(e.digest))
                os.setxattr(fd, _OVERLAY + b"redirect", b"/" + e.payload)
            elif e.size:
                data = image.read_inline(e)
                while data:
                    data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    elif e.type is EntryType.SYMLINK:
        os.symlink(e.symlink or b"", os.fsencode(name), dir_fd=parent)
    elif e.type is EntryType.DIR:
        os.mkdir(name, dir_fd=parent)
    else:
        fmt = {
            EntryType.CHAR: stat.S_IFCHR,
            EntryType.BLOCK: stat.S_IFBLK,
            EntryType.FIFO: stat.S_IFIFO,
            EntryType.SOCKET: stat.S_IFSOCK,
        }[e.type]
        os.mknod(name, fmt | stat.S_IMODE(e.mode), e.rdev, dir_fd=parent)
    _apply_meta(parent, name, e)


def build_mask_layer(
    target: Path, fixes: Sequence[Fix], images: Sequence[tuple[str, Image]]
) -> None:
    """Write ``fixes`` under ``target``; ``images`` are (module, parsed image), top first.

    Nothing is made outside ``target``: each fix is reached segment by
    segment without following links (:class:`~powernode.agent.beneath.Beneath`),
    so a symlink an earlier fix copied from an image is never gone through.
    """
    by_name = dict(images)
    target.mkdir(parents=True)
    made_dirs: list[tuple[str, Entry]] = []

    def make_dir(parent: int, name: str, rel: str) -> None:
        os.mkdir(name, dir_fd=parent)
        found = _lookup_first(images, rel)
        if found is not None and found.type is EntryType.DIR:
            _apply_meta(parent, name, found)
            made_dirs.append((rel, found))

    with Beneath(target) as mask:
        for fix in fixes:
            with mask.parent(fix.path, make=make_dir) as (parent, name):
                if fix.winner is None:
                    os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)  # a whiteout
                    continue
                image = by_name[fix.winner]
                try:
                    entry = image.lookup("/" + fix.path)
                except FileNotFoundError as e:
                    raise DataError(
                        f"composition: {fix.path!r} is won by {fix.winner!r}, whose image does "
                        "not ship it; the composition does not match the attached modules: "
                        "sync again"
                    ) from e
                _write_entry(parent, name, entry, image)
                _times(parent, name, entry)
        for rel, meta in reversed(made_dirs):  # after their children: making those moved mtime
            with mask.parent(rel) as (parent, name):
                _times(parent, name, meta)


def _lookup_first(images: Sequence[tuple[str, Image]], rel: str) -> Entry | None:
    for _, image in images:
        try:
            return image.lookup("/" + rel)
        except FileNotFoundError:
            continue
    return None
