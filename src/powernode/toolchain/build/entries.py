"""The files a build can ship: entries read from rootfs/ and from the package tree.

A build has up to two sources: the tree mmdebstrap installed (a tar file,
``build_packages``) and the module repo's ``rootfs/`` laid over it. Both are
read into :class:`Entry` values first (metadata only, no content), so that
merging, selecting and normalising are pure functions over lists, and only
the files a module actually ships are ever opened.

Security rules (docs/build.md "Security"):

- Symlinks are entries like any other: their target is stored, never
  followed. Reading content opens with ``O_NOFOLLOW``.
- A path that escapes its root is refused: ``..`` or an absolute name in
  the package tar, ``rootfs/`` itself being a symlink, a rootfs/ directory
  that lands on a symlink of the package tree (``rootfs/bin/x`` over
  ``/bin -> usr/bin`` would write through the link).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from powernode.errors import SourceTreeError

MAX_ENTRIES = 2_000_000  # bound on untrusted trees (rootfs/ and the package tar)

Origin = Literal["rootfs", "packages"]


@dataclass(frozen=True)
class Entry:
    """One path of a source tree: lstat-like metadata and where to read content.

    ``path`` is an artifact path (``/etc/x``, no trailing slash); ``where``
    names the source for error messages (a host path or ``tar:member``).
    """

    path: str
    mode: int  # st_mode: type and permission bits
    uid: int
    gid: int
    mtime: int
    size: int
    origin: Origin
    where: str
    target: bytes | None = None  # symlink target
    rdev: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def listed(self) -> str:
        """The path as the glob matcher lists it: directories end with "/"."""
        return self.path + "/" if self.is_dir and self.path != "/" else self.path


def rootfs_entries(rootfs: Path, *, epoch: int, limit: int = MAX_ENTRIES) -> list[Entry]:
    """Every path under ``rootfs`` (missing: none), normalised for reproducibility.

    Git records neither owners, mtimes, xattrs nor permission bits beyond
    the executable bit, so whatever the checkout has there is build-host
    noise: owners become root, mtimes SOURCE_DATE_EPOCH, xattrs are dropped,
    and group/other write bits are cleared (umask 022, whatever the host's).
    """
    if os.path.islink(rootfs):
        raise SourceTreeError(
            f"{rootfs}: is a symlink (to {os.readlink(rootfs)}); a module's rootfs/ must be "
            "a real directory inside the repo"
        )
    if not rootfs.exists():  # a packages-only module: just the root directory
        mode = stat.S_IFDIR | 0o755
        return [Entry("/", mode, 0, 0, epoch, 0, "rootfs", str(rootfs))]
    if not rootfs.is_dir():
        raise SourceTreeError(f"{rootfs}: is not a directory; rootfs/ holds the module's files")
    out = [_rootfs_entry(rootfs, "/", os.lstat(rootfs), epoch)]
    for dirpath, dirnames, filenames in os.walk(rootfs, followlinks=False, onerror=_walk_error):
        rel = os.path.relpath(dirpath, rootfs)
        base = "" if rel == "." else "/" + rel.replace(os.sep, "/")
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError as e:
                raise SourceTreeError(f"{full}: cannot stat: {e.strerror}") from e
            out.append(_rootfs_entry(Path(full), f"{base}/{name}", st, epoch))
        if len(out) > limit:
            raise SourceTreeError(f"{rootfs}: more than {limit} entries; refusing to read it")
    return out


def _walk_error(e: OSError) -> None:
    raise SourceTreeError(f"{e.filename}: cannot read directory: {e.strerror}") from e


def _rootfs_entry(full: Path, path: str, st: os.stat_result, epoch: int) -> Entry:
    target = os.readlink(full).encode("utf-8", "surrogateescape") if os.path.islink(full) else None
    mode = st.st_mode & ~0o022 if not stat.S_ISLNK(st.st_mode) else st.st_mode
    return Entry(
        path=path,
        mode=mode,
        uid=0,
        gid=0,
        mtime=epoch,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        origin="rootfs",
        where=str(full),
        target=target,
        rdev=st.st_rdev,
    )


def _parents(path: str) -> Iterator[str]:
    """``/a/b/c`` → ``/a``, ``/a/b`` (not the root, not the path itself)."""
    end = path.find("/", 1)
    while end > 0:
        yield path[:end]
        end = path.find("/", end + 1)


def merge(base: Iterable[Entry], overlay: Iterable[Entry]) -> list[Entry]:
    """``overlay`` laid over ``base`` (rootfs/ over the package tree), sorted by path.

    An overlay entry replaces the base entry at its path, and a non-directory
    replacing a base directory hides everything under it. Where both are
    directories the base's metadata stays (a package's ``/var/log/x`` owner
    and mode survive a rootfs/ file placed inside it). A rootfs/ directory
    over a base symlink is refused: copying it would write through the link.
    """
    merged = {e.path: e for e in base}
    hidden: list[str] = []
    for e in overlay:
        old = merged.get(e.path)
        if old is not None and e.is_dir and stat.S_ISLNK(old.mode):
            raise SourceTreeError(
                f"{e.where}: is a directory, but {e.path} in the package tree is a symlink "
                f"(to {old.target.decode(errors='replace') if old.target else '?'}); "
                "rootfs/ entries never go through a symlink: put the files under the "
                "link's target path"
            )
        if old is not None and old.is_dir and e.is_dir:
            continue
        if old is not None and old.is_dir:
            hidden.append(e.path + "/")
        merged[e.path] = e
    if hidden:
        prefixes = tuple(hidden)
        merged = {p: e for p, e in merged.items() if not p.startswith(prefixes)}
    return [merged[p] for p in sorted(merged)]


def check_parents(entries: Iterable[Entry]) -> None:
    """Every entry's parents must be directories in the same listing (no path via a link)."""
    kinds = {e.path: e for e in entries}
    for e in kinds.values():
        for parent in _parents(e.path):
            p = kinds.get(parent)
            if p is not None and not p.is_dir:
                raise SourceTreeError(
                    f"{e.where}: its parent {parent} is not a directory; refusing a path "
                    "that resolves through a symlink or file"
                )


def with_origin_mtime_clamped(entries: Iterable[Entry], epoch: int) -> list[Entry]:
    """mtimes newer than SOURCE_DATE_EPOCH become it (files written by maintainer scripts)."""
    return [replace(e, mtime=epoch) if e.mtime > epoch else e for e in entries]
