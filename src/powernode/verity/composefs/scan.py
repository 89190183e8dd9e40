"""Directory scan: turn a source directory into a `Tree`, as mkcomposefs does.

Follows shared/notes/COMPOSEFS.md §5.1 (directory mode): lstat only, symlinks
never followed, every xattr name from listxattr read verbatim, nlink not
read (so hard links are NOT detected: each path becomes its own inode, like
mkcomposefs), files of 64 bytes or less stored inline, larger files named
by the fs-verity SHA-256 digest of their content.

On top of mkcomposefs, the scan enforces powernode's policy (devices and
setuid/setgid files only when the module manifest allows them), and makes
builds reproducible: `source_date_epoch` clamps newer mtimes, `use_epoch`
zeroes them. A file that changes while it is read is an error, not a silent
mismatch between the image and the object store.

Speed: with an :class:`ObjectStager`, each file is read once: the bytes
hashed are the bytes staged into the digest store. Files up to 1 MiB are
read with one read() and digested in one pass; larger ones are streamed.
Without a stager, contents can be digested on forked processes beside the
walk (``processes``, the one that pays with a warm cache); with or without,
on a thread pool (``threads``, which pays only when the cache is cold).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from powernode.errors import ConfigError, SourceTreeError
from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.objects import ObjectStager, store_error, write_all
from powernode.verity.composefs.scan_procs import DigestPool
from powernode.verity.composefs.tree import Node, Tree, check_name, check_node, object_name
from powernode.verity.fsverity_procs import fork_is_safe
from powernode.verity.fsverity_tree import FsVerityHasher, digest_bytes, verity_params

log = logging.getLogger(__name__)

# Files up to this size are read with one read() and digested in one pass; larger
# ones are streamed in chunks of this size, so memory stays bounded per worker.
_READ_CHUNK = 1 << 20
_MAX_THREADS = 64
# files handed to a reader thread per task: few enough that every thread gets work
_BATCH_FILES = 32
_BATCH_BYTES = 4 << 20
_SHA256_4K = verity_params()  # composefs names objects by fs-verity sha256, 4 KiB blocks
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
ReadHook = Callable[[Path, int], None]


@dataclass(frozen=True)
class TreePolicy:
    """What a scan accepts and how it normalises metadata.

    ``allow_devices`` / ``allow_setuid`` mirror the manifest fields
    ``allow.devices`` / ``allow.setuid``. Whiteouts (character devices 0:0)
    are always accepted: they are how a module deletes lower-layer files and
    the writer turns them into regular files (§6.1).
    """

    allow_devices: bool = False
    allow_setuid: bool = False
    source_date_epoch: int | None = None  # clamp every newer mtime to this
    use_epoch: bool = False  # every mtime becomes 0 (mkcomposefs --use-epoch)
    xattrs: Literal["all", "user", "none"] = "all"  # mkcomposefs --user-xattrs / --skip-xattrs
    max_entries: int = 5_000_000  # bound on untrusted trees


def _fail(path: Path | bytes, message: str) -> SourceTreeError:
    shown = os.fsdecode(path)
    return SourceTreeError(f"{shown}: {message}")


def scan_tree(
    src: Path,
    *,
    policy: TreePolicy,
    read_hook: ReadHook | None = None,
    stager: ObjectStager | None = None,
    threads: int = 0,
    processes: int = 0,
) -> Tree:
    """Scan ``src`` into a Tree; raises SourceTreeError naming the offending path.

    ``stager``: stage every external file's content into a digest store as it
    is read (the caller publishes or aborts it).

    ``threads``: how many threads read and hash file contents beside the walk
    (in batches of files, in walk order); 0, the default, reads them on the
    calling thread. They pay only with a cold page cache, by overlapping
    disk reads (4 threads: 0.26-0.36 s against 0.41-0.61 s serial on
    /usr/lib/python3.11): each 4 KiB block is a hashlib call whose Python
    part runs under the GIL, so warm, 2 threads gain nothing.

    ``processes``: above 1, and with no ``stager`` nor ``read_hook``, files
    are digested on that many processes (this one and forked children, the
    digests overlapping the walk; :mod:`.scan_procs`), and ``threads`` is
    not used. Not in a process running other threads, where forking is
    unsafe (``fork_is_safe``): ``threads`` applies then. With a digest store
    each file must be read once and staged by this process, so
    ``processes`` is ignored there.

    ``read_hook(path, bytes_read)`` is called after every chunk read from a
    regular file (a test seam for files that change while they are read).
    """
    for what, value in (("threads", threads), ("processes", processes)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_THREADS:
            raise ConfigError(f"{what} must be an integer from 0 to {_MAX_THREADS}, not {value!r}")
    try:
        st = os.stat(src)  # SRC itself may be a symlink to a directory
    except FileNotFoundError as e:
        raise _fail(src, "source directory does not exist") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _fail(src, "source path is a symlink loop") from e
        raise _fail(src, f"cannot stat source directory: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise _fail(src, "source is not a directory")
    reader = _ContentReader(read_hook, stager)
    if processes > 1 and stager is None and read_hook is None and fork_is_safe():
        with DigestPool(processes) as digests:
            tree = _Walk(policy, reader, None, digests=digests).run(os.fsencode(src), st)
            digests.finish(reader.read, reader.set_digest)
    elif threads == 0:
        tree = _Walk(policy, reader, None).run(os.fsencode(src), st)
    else:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cfs-scan") as pool:
            tree = _Walk(policy, reader, pool).run(os.fsencode(src), st)
    log.debug("scanned %s", src)
    return tree


class _Walk:
    """The directory walk; regular files' contents go to ``reader``, on ``pool`` if given."""

    def __init__(
        self,
        policy: TreePolicy,
        reader: _ContentReader,
        pool: ThreadPoolExecutor | None,
        *,
        digests: DigestPool | None = None,
    ) -> None:
        self.digests = digests  # if given, external files are digested there
        self.policy = policy
        self.reader = reader
        self.pool = pool
        self.count = 0
        self.pending: list[Future[None]] = []
        self.batch: list[tuple[bytes, os.stat_result, Node]] = []
        self.batch_bytes = 0
        self.sde = policy.source_date_epoch

    def run(self, top: bytes, st: os.stat_result) -> Tree:
        try:
            root = self.node(top, st)
            tree = Tree(root)
            stack: list[tuple[bytes, Node]] = [(top, root)]
            while stack:
                dirpath, dirnode = stack.pop()
                children = dirnode.children
                for name, child_path, child_st in self.entries(dirpath):
                    child = self.node(child_path, child_st)
                    children[name] = child
                    if stat.S_ISDIR(child_st.st_mode):
                        stack.append((child_path, child))
            self.submit()
        except BaseException:
            for future in self.pending:
                future.cancel()
            raise
        finally:
            # every read ends before the caller may abort the stager or close the pool
            for future in self.pending:
                if not future.cancelled():
                    future.exception()
        for future in self.pending:
            future.result()  # the first failure in walk order
        log.debug("walked %d entries", self.count)
        return tree

    def submit(self) -> None:
        """Hand the batch of files collected so far to the pool (one task: less overhead
        than one per file, and the batch is read in walk order, so the first failure of
        the first failing task is the first in walk order)."""
        if self.batch and self.pool is not None:
            self.pending.append(self.pool.submit(self.reader.read_all, self.batch))
            self.batch, self.batch_bytes = [], 0

    def entries(self, dirpath: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
        try:
            with os.scandir(dirpath) as it:
                found = [(e.name, e.path, e.stat(follow_symlinks=False)) for e in it]
        except OSError as e:
            raise _fail(dirpath, f"cannot read directory: {e.strerror}") from e
        self.count += len(found)
        if self.count > self.policy.max_entries:
            raise _fail(dirpath, f"tree has more than {self.policy.max_entries} entries")
        for name, path, _ in found:
            if len(name) > L.NAME_MAX:  # the kernel already excludes "", ".", "..", NUL, "/"
                check_name(name, os.fsdecode(path))
        found.sort(key=lambda t: t[0])
        return found

    def node(self, path: bytes, st: os.stat_result) -> Node:
        mode = st.st_mode
        sec, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
        if self.policy.use_epoch:
            sec, nsec = 0, 0
        elif self.sde is not None and (sec, nsec) > (self.sde, 0):
            sec, nsec = self.sde, 0
        node = Node(mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=sec, mtime_nsec=nsec)
        if stat.S_ISREG(mode):
            if mode & (stat.S_ISUID | stat.S_ISGID) and not self.policy.allow_setuid:
                raise _fail(
                    path,
                    f"is setuid/setgid (mode {stat.S_IMODE(mode):04o}); set allow.setuid: true "
                    "in the module manifest or clear the bit",
                )
            node.size = st.st_size
        elif stat.S_ISBLK(mode) or (stat.S_ISCHR(mode) and st.st_rdev != 0):
            if not self.policy.allow_devices:
                raise _fail(
                    path,
                    "is a device node; set allow.devices: true in the module manifest "
                    "to include device nodes",
                )
            node.rdev = st.st_rdev
        elif stat.S_ISLNK(mode):
            try:
                node.target = os.readlink(path)
            except OSError as e:
                raise _fail(path, f"cannot read symlink: {e.strerror}") from e
        if self.policy.xattrs != "none":
            node.xattrs = self._xattrs(path)
        # checked before the content is read: a node refused here stages no object
        check_node(node, os.fsdecode(path))
        if node.size:
            if node.size > L.INLINE_CONTENT_MAX and self.digests is not None:
                # set now, while workers digest, not in the serial part after them
                node.source = Path(os.fsdecode(path))  # (a Path costs ~3 µs)
                self.digests.add(path, st, node)
            elif node.size > L.INLINE_CONTENT_MAX and self.pool is not None:
                self.batch.append((path, st, node))
                self.batch_bytes += node.size
                if len(self.batch) >= _BATCH_FILES or self.batch_bytes >= _BATCH_BYTES:
                    self.submit()
            else:
                self.reader.read(path, st, node)
        return node

    def _xattrs(self, path: bytes) -> dict[bytes, bytes]:
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return {}
            raise _fail(path, f"cannot list xattrs: {e.strerror}") from e
        out: dict[bytes, bytes] = {}
        for name in names:
            if self.policy.xattrs == "user" and not name.startswith("user."):
                continue
            try:
                out[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
            except OSError as e:
                if e.errno == errno.ENODATA:  # removed between list and get
                    continue
                raise _fail(path, f"cannot read xattr {name}: {e.strerror}") from e
        return out


class _ContentReader:
    """Reads one regular file: inline content, or digest (and staged object). Thread-safe."""

    def __init__(self, read_hook: ReadHook | None, stager: ObjectStager | None) -> None:
        self.read_hook = read_hook
        self.stager = stager

    @staticmethod
    def set_digest(path: bytes, node: Node, digest: bytes) -> None:
        """An external file digested elsewhere (a DigestPool; the walk set its source)."""
        node.digest = digest
        node.payload = object_name(digest)

    def read_all(self, batch: list[tuple[bytes, os.stat_result, Node]]) -> None:
        for path, st, node in batch:
            self.read(path, st, node)

    def read(self, path: bytes, st: os.stat_result, node: Node) -> None:
        try:
            # O_NONBLOCK: a fifo swapped in since the lstat must fail the fstat check below,
            # not block the open (regular files ignore the flag)
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as e:
            raise _fail(
                path, f"cannot read file: {e.strerror}; run the build as a user that can read it"
            ) from e
        try:
            before = os.fstat(fd)
            if (before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns) != (
                st.st_ino,
                st.st_dev,
                st.st_size,
                st.st_mtime_ns,
            ):
                raise _changed(path)
            if st.st_size <= _READ_CHUNK:
                self._whole(path, fd, st, node)
            else:
                self._streamed(path, fd, st, node)
        finally:
            os.close(fd)

    def _read(self, path: bytes, fd: int, want: int, done: int) -> bytes:
        try:
            buf = os.read(fd, want)
        except OSError as e:
            raise _fail(path, f"cannot read file: {e.strerror}") from e
        if self.read_hook is not None and buf:
            self.read_hook(Path(os.fsdecode(path)), done + len(buf))
        return buf

    def _whole(self, path: bytes, fd: int, st: os.stat_result, node: Node) -> None:
        size = st.st_size
        # one byte more than expected: a file that grew shows up as a long read
        data = self._read(path, fd, size + 1, 0)
        while 0 < len(data) < size:  # a short read before the end: keep going
            more = self._read(path, fd, size + 1 - len(data), len(data))
            if not more:
                break
            data += more
        # A regular file's read() is short only at the end of the file, so ``size``
        # bytes here plus an unchanged fstat below mean the whole, same file was read.
        if len(data) != size:
            raise _changed(path)
        _check_unchanged(path, fd, st)
        if size <= L.INLINE_CONTENT_MAX:
            node.content = data
            return
        digest = digest_bytes(_SHA256_4K, data)
        name = object_name(digest)
        if self.stager is not None and self.stager.claim(name):
            self.stager.write(name, data)
        self._external(path, node, digest, name)

    def _streamed(self, path: bytes, fd: int, st: os.stat_result, node: Node) -> None:
        """A file too large to hold whole: hashed (and staged) chunk by chunk."""
        stager = self.stager
        hasher = FsVerityHasher()
        out_fd, tmp = stager.temp() if stager is not None else (-1, b"")
        done = 0
        try:
            while buf := self._read(path, fd, _READ_CHUNK, done):
                done += len(buf)
                if done > st.st_size:
                    raise _changed(path)
                hasher.update(buf)
                if stager is not None:
                    try:
                        write_all(out_fd, buf)
                    except OSError as e:
                        raise store_error(stager.store, e) from e
            if done != st.st_size:
                raise _changed(path)
            _check_unchanged(path, fd, st)
            digest = hasher.digest()
            name = object_name(digest)
            keep = stager is not None and stager.claim(name)
        except BaseException:
            if stager is not None:
                os.close(out_fd)
                stager.discard(tmp)
            raise
        if stager is not None:
            if keep:
                stager.finish(out_fd, tmp, name)
            else:  # another file of this build, or the store, already has it
                os.close(out_fd)
                stager.discard(tmp)
        self._external(path, node, digest, name)

    @staticmethod
    def _external(path: bytes, node: Node, digest: bytes, name: bytes) -> None:
        node.digest = digest
        node.payload = name
        node.source = Path(os.fsdecode(path))


def _check_unchanged(path: bytes, fd: int, st: os.stat_result) -> None:
    after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    ):
        raise _changed(path)


def _changed(path: bytes) -> SourceTreeError:
    return _fail(
        path,
        "file changed while it was read (size, mtime or inode differ before and after); "
        "stop writers to the source tree and build again",
    )
