"""Copy a tree's external file contents into a digest store (mkcomposefs --digest-store).

Layout and behaviour follow shared/notes/COMPOSEFS.md §12: each non-empty,
non-inline regular file becomes ``STORE/hh/<62hex>`` (mode 0644, missing
``hh`` directories created 0755), written as a temporary file and renamed
into place; an object that already exists is left alone (content-addressed).
All of a build's objects are staged before any is renamed, so a build that
fails leaves the store unchanged.

Two ways in:

- :class:`ObjectStager` is fed by the directory scan itself
  (``scan_tree(..., stager=...)``): each file is read once, and the bytes
  that were hashed are the bytes written, so the object's content matches
  its name by construction.
- :func:`store_objects` copies the objects of a tree scanned earlier; it
  re-hashes the bytes it copies and compares them with the digest the image
  records, so a source that changed after the scan cannot put wrong content
  under a right name.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from powernode import linux
from powernode.errors import SourceTreeError, SyscallError
from powernode.verity.composefs.tree import Tree
from powernode.verity.fsverity import FsVerityHasher

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_COPY_THREADS = 8


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


def store_error(store: Path, e: OSError) -> SourceTreeError:
    return SourceTreeError(f"{store}: cannot write to the digest store: {e.strerror}")


class ObjectStager:
    """One build's new objects: staged as temporary files in the store, then published.

    Thread-safe: the scan's workers claim, write and keep objects concurrently.
    Temporary files are ``STORE/.tmp-<pid>-<n>`` (created exclusively, so two
    builds into one store never share one). :meth:`publish` renames them all
    into place; :meth:`abort` removes them and the directories this build
    created, leaving the store as it was.

    Durability: :meth:`publish` makes every temporary file durable before the
    first rename, and the renames durable before it returns, so the objects
    survive a crash and the image (written after) can rely on them. Each
    step is one ``syncfs`` of the store's filesystem rather than an fsync per
    file and directory: on ext4 each fsync is a journal commit of its own, and
    a build has thousands of objects in up to 256 directories.
    """

    def __init__(self, store: Path) -> None:
        self.store = store
        self._root = os.fsencode(store)
        self._lock = threading.Lock()
        self._claimed: set[bytes] = set()
        self._temps: set[bytes] = set()
        self._kept: list[tuple[bytes, bytes]] = []  # (temporary path, object name)
        self._created: list[Path] = []
        self._seq = itertools.count()
        self._pid = os.getpid()
        try:
            _mkdir(store, self._created, parents=True)
        except OSError as e:
            self.abort()
            raise store_error(store, e) from e
        self._fresh = bool(self._created)  # a store this build created holds nothing yet

    def claim(self, name: bytes) -> bool:
        """True if the caller must write object ``name`` (``hh/<62hex>``): it is neither
        in the store nor claimed by another file of this build."""
        with self._lock:
            if name in self._claimed:
                return False
            self._claimed.add(name)
        # follows symlinks, as the copy path always did: an object is a file
        return self._fresh or not os.path.isfile(self._root + b"/" + name)

    def temp(self) -> tuple[int, bytes]:
        """A new temporary file in the store, open for writing: (fd, path)."""
        while True:
            path = b"%s/.tmp-%d-%d" % (self._root, self._pid, next(self._seq))
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:  # left by a crashed build whose pid we now have
                continue
            except OSError as e:
                raise store_error(self.store, e) from e
            with self._lock:
                self._temps.add(path)
            try:
                os.fchmod(fd, 0o644)  # whatever the umask: §12 objects are 0644
            except OSError as e:
                os.close(fd)
                raise store_error(self.store, e) from e
            return fd, path

    def finish(self, fd: int, path: bytes, name: bytes) -> None:
        """Close a temporary file from :meth:`temp`, to be published as ``name``."""
        try:
            os.close(fd)
        except OSError as e:  # a deferred write error (NFS, quota)
            raise store_error(self.store, e) from e
        with self._lock:
            self._kept.append((path, name))

    def write(self, name: bytes, data: bytes | memoryview) -> None:
        """Stage ``data`` (already hashed to ``name``) as a new object."""
        fd, path = self.temp()
        try:
            write_all(fd, data)
        except OSError as e:
            os.close(fd)
            raise store_error(self.store, e) from e
        self.finish(fd, path, name)

    def discard(self, path: bytes) -> None:
        """Remove a temporary file that turned out not to be needed."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with self._lock:
            self._temps.discard(path)

    def publish(self) -> int:
        """Rename every kept object into place; returns how many were published."""
        kept = sorted(self._kept, key=lambda t: t[1])
        dirs: dict[bytes, None] = {}
        try:
            _flush(self._root, [path for path, _ in kept])
            for path, name in kept:
                parent = self._root + b"/" + name[:2]
                if parent not in dirs:
                    _mkdir(Path(os.fsdecode(parent)), self._created)
                    dirs[parent] = None
                os.replace(path, self._root + b"/" + name)
                self._temps.discard(path)
            # the renames themselves are durable before the image is written
            _flush(self._root, list(dirs))
        except OSError as e:
            self.abort()
            raise store_error(self.store, e) from e
        self._kept.clear()
        for _, name in kept:
            if not try_enable_verity(self._root + b"/" + name):
                break  # this kernel or filesystem has no fs-verity: no use asking again
        log.info("digest store %s: %d objects added", self.store, len(kept))
        return len(kept)

    def abort(self) -> None:
        """Remove every temporary file and the directories this build created."""
        with self._lock:
            temps, self._temps = self._temps, set()
            self._kept.clear()
        for path in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for d in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty: objects of this build landed
                d.rmdir()
        self._created.clear()


def store_objects(objects: tuple[ObjectRef, ...], store: Path) -> int:
    """Copy every missing object into ``store``; returns how many were copied.

    Every missing object is first copied to a temporary file in ``store`` and
    verified, and only when all of them are good are they renamed into place;
    on error the store is left as it was.
    """
    stager = ObjectStager(store)
    try:
        todo = [ref for ref in objects if stager.claim(ref.name.encode())]
        # Copies overlap on several threads: creating and fsyncing many small files is
        # latency-bound (hashlib and os calls release the GIL). Leaving the block waits
        # for every copy, so abort() below sees every temporary file.
        with ThreadPoolExecutor(max_workers=max(1, min(_COPY_THREADS, len(todo)))) as pool:
            futures = [pool.submit(_stage, ref, stager) for ref in todo]
        for future in futures:  # the first error, in name order
            future.result()
        return stager.publish()
    except BaseException:
        stager.abort()
        raise


def copy_object(ref: ObjectRef, store: Path) -> bool:
    """Copy one object unless present; False if it was already there."""
    return store_objects((ref,), store) == 1


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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


def _flush(root: bytes, paths: list[bytes]) -> None:
    """Make ``paths`` (files or directories under ``root``) durable.

    One syncfs(2) of the filesystem when the C library has it: on ext4 each
    fsync is a journal commit of its own (256 directory fsyncs took 0.4-0.7 s
    here; one syncfs after thousands of renames takes ~0.1 s).
    """
    if not paths:
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs(fd):
            return
    finally:
        os.close(fd)
    # no syncfs(2): fsync each one, several at a time (each waits for its own commit)
    with ThreadPoolExecutor(max_workers=min(_COPY_THREADS, len(paths))) as pool:
        list(pool.map(_fsync_path, paths))


def _syncfs(fd: int) -> bool:
    """syncfs(2) of the filesystem holding ``fd``; False when this C library lacks it."""
    try:
        linux.syncfs(fd)
    except AttributeError:  # no such symbol: not glibc >= 2.14
        return False
    return True


def _fsync_path(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage(ref: ObjectRef, stager: ObjectStager) -> None:
    """A verified copy of ``ref``'s content, kept by ``stager``."""
    fd, tmp = stager.temp()
    try:
        digest = _copy_hashing(ref, fd)
    except BaseException:
        os.close(fd)
        raise
    expected = ref.name.replace("/", "")
    if digest.hex() != expected:
        os.close(fd)
        raise SourceTreeError(
            f"{ref.source}: content changed since it was scanned (digest "
            f"{digest.hex()}, image records {expected}); "
            "stop writers to the source tree and build again"
        )
    stager.finish(fd, tmp, ref.name.encode())


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
            write_all(out_fd, buf)
    except OSError as e:
        raise SourceTreeError(f"{ref.source}: copying into the store failed: {e.strerror}") from e
    finally:
        os.close(in_fd)
    return hasher.digest()


def try_enable_verity(path: bytes) -> bool:
    """Like mkcomposefs: try to enable fs-verity, ignoring failures.

    False when the kernel or filesystem lacks fs-verity (ENOTTY, EOPNOTSUPP:
    fsverity.rst, FS_IOC_ENABLE_VERITY), so the caller stops trying.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        linux.enable_verity(fd)
    except SyscallError as e:
        log.debug("fs-verity not enabled on %s: %s", os.fsdecode(path), e.strerror)
        return e.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.ENOSYS)
    finally:
        os.close(fd)
    return True
