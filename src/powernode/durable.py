"""Durable writes, written once: atomic replace, fsync of a directory, syncfs.

A file is replaced atomically and durably (STYLE.md rule 7) by writing a
temporary file in the same directory, fsyncing it, renaming it over the
target (``os.replace``, atomic within one filesystem, rename(2)) and then
fsyncing the directory, without which the rename itself may not survive a
crash (fsync(2): "calling fsync() on a file descriptor for the file does
not ensure that the entry in the directory ... has also reached disk").
Readers see the old content or the new, never a mix; on any error the
temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, TypeAlias

# What json.dumps takes (read-only views, so a dict[str, str] is one too).
JSON: TypeAlias = "Mapping[str, JSON] | Sequence[JSON] | str | int | float | bool | None"


def fsync_dir(path: Path) -> None:
    """fsync(2) the directory ``path``: makes a rename or unlink in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """syncfs(2) of the filesystem holding ``path``: one flush for a batch of files."""
    # ctypes only when asked for: the many callers that write files do not load it
    from powernode import linux  # noqa: PLC0415

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.syncfs(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: Path, *, mode: int = 0o644, temp_prefix: str | None = None
) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends without an error.

    The temporary file is created beside ``path`` (``temp_prefix``, default
    ``.<name>.``, lets sweeps recognise leftovers of a killed process) with
    ``mode`` whatever the umask. On an exception it is removed and ``path``
    keeps what it had.
    """
    prefix = temp_prefix if temp_prefix is not None else f".{path.name}."
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp makes 0600; the umask must not matter
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(
    path: Path, data: bytes, *, mode: int = 0o644, temp_prefix: str | None = None
) -> None:
    """Replace ``path`` with ``data``, atomically and durably."""
    with atomic_file(path, mode=mode, temp_prefix=temp_prefix) as f:
        f.write(data)


def write_text(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically and durably."""
    write_bytes(path, text.encode("utf-8"), mode=mode)


def canonical_json(doc: object) -> bytes:
    """Sorted keys, no whitespace: equal documents are equal bytes."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_json(path: Path, doc: object, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``doc`` as canonical JSON, atomically and durably."""
    write_bytes(path, canonical_json(doc), mode=mode)


def create_once(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """Create ``path`` holding ``data`` unless it exists; False when it did (first writer wins).

    The bytes go to a fsynced temporary file that is hard-linked (link(2)
    fails with EEXIST rather than replacing) to ``path``, so ``path`` is never
    seen half-written and a concurrent creator's file is never overwritten.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)
