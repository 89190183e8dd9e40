"""Make files beneath a directory without following links: a walk with ``O_NOFOLLOW``.

Issue 13, item 7. A checked path (:mod:`powernode.agent.pathcheck`) is only
a name: a link on the way can come from the data itself (an image's
symlink copied into the mask layer, then a later path through it), and
``Path`` operations follow it. :class:`Beneath` holds the root directory
open and reaches every entry one segment at a time with
``openat(dirfd, seg, O_DIRECTORY | O_NOFOLLOW)``: a symlink (``ELOOP``) or a
non-directory (``ENOTDIR``) on the way is refused, and ``..`` never reaches
the kernel, so nothing outside the root is read or written. Leaves are made
with the ``*at`` calls on the parent's descriptor (``mknodat``,
``symlinkat``, ``mkdirat``, ``openat(O_CREAT | O_EXCL | O_NOFOLLOW)``),
which do not follow a link in the last segment either.

This is the portable form of ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``
(Linux >= 5.6), with one code path on every kernel the agent runs on.
Calls without a ``dir_fd`` form (``lsetxattr``) take
``/proc/self/fd/<parent>/<name>``: the magic link resolves to the directory
held open, and the last segment is not followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from powernode.errors import DataError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

MakeDir = Callable[[int, str, str], None]  # (parent fd, name, path beneath the root)


class Beneath:
    """An open directory; entries beneath it are reached segment by segment, links refused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self.fd = os.open(root, DIR_FLAGS)
        except OSError as e:
            raise DataError(
                f"{root}: cannot open as a directory without following links: {e}"
            ) from e

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Beneath:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def segments(self, rel: str) -> list[str]:
        """``rel``'s segments; DataError for an empty, ``.``, ``..`` or NUL one."""
        segs = rel.split("/")
        for seg in segs:
            if seg in ("", ".", "..") or "\0" in seg:
                raise DataError(f"{self.root}: {rel!r} is not a normalised relative path; refused")
        return segs

    @contextlib.contextmanager
    def parent(self, rel: str, *, make: MakeDir | None = None) -> Iterator[tuple[int, str]]:
        """(descriptor of ``rel``'s parent directory, ``rel``'s last segment), while open.

        A missing directory on the way is made by ``make(parent_fd, name,
        path)`` when given (it must create ``name`` in ``parent_fd``), else
        FileNotFoundError.
        """
        segs = self.segments(rel)
        fd = os.dup(self.fd)
        try:
            for i, seg in enumerate(segs[:-1]):
                child = self._step(fd, seg, "/".join(segs[: i + 1]), make)
                os.close(fd)
                fd = child
            yield fd, segs[-1]
        finally:
            os.close(fd)

    def _step(self, fd: int, seg: str, so_far: str, make: MakeDir | None) -> int:
        """A new descriptor of directory ``seg`` in ``fd``."""
        try:
            try:
                return os.open(seg, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if make is None:
                    raise
                make(fd, seg, so_far)
                return os.open(seg, DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise DataError(
                    f"{self.root / so_far}: a symbolic link or not a directory; refused to "
                    f"go through it (files are made beneath {self.root} without following "
                    "links)"
                ) from e
            raise


def at(fd: int, name: str) -> str:
    """A path naming ``name`` in the directory ``fd``, for calls with no ``dir_fd`` form."""
    return f"/proc/self/fd/{fd}/{name}"
