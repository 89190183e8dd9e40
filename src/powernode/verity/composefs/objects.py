"""Copy a tree's external file contents into a digest store (mkcomposefs --digest-store).

Layout and behaviour follow shared/notes/COMPOSEFS.md §12: each non-empty,
non-inline regular file becomes ``STORE/hh/<62hex>`` (mode 0644, missing
``hh`` directories created 0755), written as a temporary file and renamed
into place; an object that already exists is left alone (content-addressed).
All of a build's objects are staged before any is renamed, so a build that
fails leaves the store unchanged.
Unlike mkcomposefs, the bytes copied are re-hashed on the way and compared
with the digest the image records, so a source that changed after the scan
cannot put wrong content under a right name.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import struct
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import SourceTreeError
from powernode.verity.composefs.tree import Tree
from powernode.verity.fsverity import FsVerityHasher

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_COPY_THREADS = 8
# FS_IOC_ENABLE_VERITY = _IOW('f', 133, struct fsverity_enable_arg) (linux/fsverity.h);
# the argument: version 1, sha256, 4096-byte blocks, no salt, no signature.
_FS_IOC_ENABLE_VERITY = 0x40806685
_ENABLE_ARG = struct.pack("<IIIIQIIQ88x", 1, 1, 4096, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class ObjectRef:
    """One object an image points at: ``name`` is ``hh/<62hex>``."""

    name: str
    size: int
    source: Path


def collect_objects(tree: Tree) -> tuple[ObjectRef, ...]:
    """Every distinct object of the tree, sorted by name (first source path wins)."""
    found: dict[str, ObjectRef] = {}
    for _, node in tree.walk():
        if node.is_reg and node.payload and node.source is not None and node.content is None:
            name = node.payload.decode()
            if name not in found:
                found[name] = ObjectRef(name, node.size, node.source)
    return tuple(found[n] for n in sorted(found))


def store_objects(objects: tuple[ObjectRef, ...], store: Path) -> int:
    """Copy every missing object into ``store``; returns how many were copied.

    Two phases, so that a failed build leaves the store as it was: every
    missing object is first copied to a temporary file in ``store`` and
    verified, and only when all of them are good are they renamed into place.
    On error the temporary files, and directories this call created, are removed.
    """
    created: list[Path] = []
    copies: list[tuple[Future[Path], Path]] = []
    done = 0
    try:
        _mkdir(store, created, parents=True)
        todo: dict[str, ObjectRef] = {}
        for ref in objects:
            if ref.name not in todo and not (store / ref.name).is_file():
                todo[ref.name] = ref
        # Copies overlap on several threads: creating and fsyncing many small files is
        # latency-bound (hashlib and os calls release the GIL). Leaving the block waits
        # for every copy, so the cleanup below sees them all.
        with ThreadPoolExecutor(max_workers=max(1, min(_COPY_THREADS, len(todo)))) as pool:
            copies = [(pool.submit(_stage, ref, store), store / ref.name) for ref in todo.values()]
        staged = [(future.result(), dest) for future, dest in copies]  # first error, by name
        for tmp, dest in staged:
            _mkdir(dest.parent, created)
            os.replace(tmp, dest)
            done += 1
    except BaseException as e:
        for future, _ in copies:
            if future.done() and not future.cancelled() and future.exception() is None:
                with contextlib.suppress(FileNotFoundError):  # gone once renamed
                    os.unlink(future.result())
        for d in reversed(created):
            with contextlib.suppress(OSError):  # not empty: objects of this build landed
                d.rmdir()
        if isinstance(e, OSError):
            raise SourceTreeError(f"{store}: cannot write to the digest store: {e.strerror}") from e
        raise
    for _, dest in copies:
        _try_enable_verity(dest)
    log.info("digest store %s: %d of %d objects copied", store, done, len(objects))
    return done


def copy_object(ref: ObjectRef, store: Path) -> bool:
    """Copy one object unless present; False if it was already there."""
    return store_objects((ref,), store) == 1


def _mkdir(path: Path, created: list[Path], *, parents: bool = False) -> None:
    if path.is_dir():
        return
    if parents:
        _mkdir(path.parent, created, parents=True)
    try:
        path.mkdir(mode=0o755)
    except FileExistsError:
        return
    created.append(path)


def _stage(ref: ObjectRef, store: Path) -> Path:
    """A verified copy of ``ref``'s content in a temporary file in ``store``."""
    try:
        fd, tmp = tempfile.mkstemp(dir=store, prefix=".tmp")
    except OSError as e:
        raise SourceTreeError(f"{store}: cannot write to the digest store: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            digest = _copy_hashing(ref, out.fileno())
            out.flush()
            os.fsync(out.fileno())
        if digest.hex() != ref.name.replace("/", ""):
            raise SourceTreeError(
                f"{ref.source}: content changed since it was scanned (digest "
                f"{digest.hex()}, image records {ref.name.replace('/', '')}); "
                "stop writers to the source tree and build again"
            )
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _copy_hashing(ref: ObjectRef, out_fd: int) -> bytes:
    hasher = FsVerityHasher()
    try:
        # O_NONBLOCK: a fifo swapped in since the scan must be refused, not block the open
        in_fd = os.open(ref.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise SourceTreeError(f"{ref.source}: cannot read file: {e.strerror}") from e
    try:
        if not stat.S_ISREG(os.fstat(in_fd).st_mode):
            raise SourceTreeError(
                f"{ref.source}: not a regular file any more (it was when scanned); "
                "stop writers to the source tree and build again"
            )
        while True:
            buf = os.read(in_fd, _CHUNK)
            if not buf:
                break
            hasher.update(buf)
            view = memoryview(buf)
            while view:
                view = view[os.write(out_fd, view) :]
    except OSError as e:
        raise SourceTreeError(f"{ref.source}: copying into the store failed: {e.strerror}") from e
    finally:
        os.close(in_fd)
    return hasher.digest()


def _try_enable_verity(path: Path) -> None:
    """Like mkcomposefs: try to enable fs-verity, ignore kernels/filesystems without it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.ioctl(fd, _FS_IOC_ENABLE_VERITY, _ENABLE_ARG)
    except OSError as e:
        log.debug("fs-verity not enabled on %s: %s", path, e.strerror)
    finally:
        os.close(fd)
