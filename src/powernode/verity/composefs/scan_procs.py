"""fs-verity digests of a tree's files on forked worker processes (``scan_tree(processes=N)``).

The scan's content work is one fs-verity digest per external file (one
hashlib call per 4 KiB block, COMPOSEFS.md §5.1). In one process that is
CPU-bound Python plus SHA-256; threads take turns on the Python part under
the GIL, separate processes do not. So :class:`DigestPool` forks
``processes - 1`` workers before the walk, and digests overlap the walk:

- The walk hands each external file to :meth:`DigestPool.add`; files are
  grouped into batches (consecutive files, ~1 MiB or 32 files; a larger
  file is a batch of its own). A worker with fewer than two batches and
  2 MiB in hand gets the next one from the front of the queue through its
  own task pipe (paths and the scan's lstat key). Big batches go to the
  front: on /usr/lib/python3.11 two files are half the bytes, and the
  digest is done when the last of them is.
- After the walk this process digests queued batches itself, a big one
  first, else from the back, topping the workers up every 0.5 ms.
- A worker answers each batch on its own result pipe: a status byte and a
  digest per file. A file it cannot read, or that changed, is left unmarked;
  a worker that dies (EOF on its pipe) has its batches put back in the queue.
- :meth:`DigestPool.finish` then sets every node's digest in walk order and
  reads each unmarked file again in this process with the scan's own reader,
  so its errors (SourceTreeError naming the path) are exactly those of a
  serial scan.

Only digests cross between processes: with a digest store the scan reads
each file once and stages the bytes it hashed, which needs the store's
bookkeeping in one process, so the scan does not use this path then.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from powernode.verity.composefs.tree import Node
from powernode.verity.fsverity_tree import FsVerityHasher, digest_bytes, verity_params

log = logging.getLogger(__name__)

_SHA256_4K = verity_params()  # composefs: fs-verity sha256, 4 KiB blocks
_DIGEST = 32
_BATCH_FILES = 32
_BATCH_BYTES = 1 << 20
_IN_FLIGHT = 2  # batches a worker holds: one being digested, one waiting
# A batch this large (one big file, usually) goes to the front of the queue, so
# a worker starts it early; and a worker holding this much gets no more for
# now: whoever is free takes the rest, rather than all waiting on one worker.
_BIG = 2 << 20
_FEED_SECONDS = 0.0005  # how often this process tops the workers up while digesting
_HEAD = struct.Struct("<qI")  # first file index, file count
# st_ino, st_dev, st_size, mtime seconds, mtime nanoseconds, path length. The mtime goes
# as seconds and nanoseconds, as stat(2) has it: st_mtime_ns does not fit a signed 64-bit
# count past 2262-04-11 (or before 1677-09-21), and mkcomposefs takes any time_t.
_FILE = struct.Struct("<QQQqII")
_NS = 1_000_000_000
_OK = b"\x01"
_FAILED = b"\x00" + bytes(_DIGEST)
_READ_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_WAIT_SECONDS = 1.0

FileEntry = tuple[bytes, os.stat_result, Node]
Batch = tuple[int, int, int]  # files [start, end), their bytes
# reads one file in the caller's process: (path, lstat, node) -> None, raising on errors
ReadOne = Callable[[bytes, os.stat_result, Node], None]
# records a digest on a node: (path, node, digest) -> None
SetDigest = Callable[[bytes, Node, bytes], None]


@dataclass
class _Worker:
    pid: int
    task_w: int
    result_r: int
    held: deque[Batch] = field(default_factory=deque)  # batches sent, in order
    pending: bytes = b""  # an answer not yet complete
    alive: bool = True

    def wants_more(self) -> bool:
        if not self.held:
            return self.alive
        return len(self.held) < _IN_FLIGHT and sum(b[2] for b in self.held) < _BIG and self.alive

    def send(self, batch: Batch, files: list[FileEntry]) -> bool:
        start, end, _ = batch
        parts = [_HEAD.pack(start, end - start)]
        for path, st, _ in files[start:end]:
            sec, nsec = divmod(st.st_mtime_ns, _NS)
            parts.append(_FILE.pack(st.st_ino, st.st_dev, st.st_size, sec, nsec, len(path)))
            parts.append(path)
        try:
            _write_all(self.task_w, b"".join(parts))
        except OSError:  # EPIPE: it died; its answers so far are still read
            self.alive = False
            return False
        self.held.append(batch)
        return True

    def receive(self, digests: list[bytes | None]) -> bool:
        """Read what is there; False at EOF (the worker is gone)."""
        data = os.read(self.result_r, 1 << 16)
        if not data:
            self.alive = False
            return False
        self.pending += data
        while len(self.pending) >= _HEAD.size:
            start, count = _HEAD.unpack_from(self.pending)
            end = _HEAD.size + count * (1 + _DIGEST)
            if len(self.pending) < end:
                break
            for i in range(count):
                at = _HEAD.size + i * (1 + _DIGEST)
                if self.pending[at : at + 1] == _OK:
                    digests[start + i] = self.pending[at + 1 : at + 1 + _DIGEST]
            self.pending = self.pending[end:]
            self.held.popleft()
        return True


class DigestPool:
    """Digests of the files a walk hands in, on this process and forked workers."""

    def __init__(self, processes: int) -> None:
        self._files: list[FileEntry] = []
        self._digests: list[bytes | None] = []
        self._queue: deque[Batch] = deque()  # batches no one holds
        self._cut_at = 0
        self._batch_bytes = 0
        self._workers: list[_Worker] = []
        try:
            for _ in range(processes - 1):
                self._workers.append(_fork_worker())
        except BaseException:
            self.close(kill=True)
            raise

    def __enter__(self) -> DigestPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(kill=exc is not None)

    def add(self, path: bytes, st: os.stat_result, node: Node) -> None:
        """An external regular file, as the walk met it."""
        self._files.append((path, st, node))
        self._digests.append(None)
        self._batch_bytes += st.st_size
        if len(self._files) - self._cut_at >= _BATCH_FILES or self._batch_bytes >= _BATCH_BYTES:
            self._cut()

    def finish(self, read_one: ReadOne, set_digest: SetDigest) -> None:
        """Digest what is left, then record every file's digest, in walk order."""
        self._cut()
        while self._queue or any(w.held for w in self._workers):
            if self._queue:
                # biggest first (a big batch waits at the front), else from the back:
                # the workers take from the front
                big = self._queue[0][2] >= _BIG
                start, end, _ = self._queue.popleft() if big else self._queue.pop()
                fed = time.monotonic()
                for i in range(start, end):
                    path, st, _ = self._files[i]
                    self._digests[i] = digest_one(path, _key(st))
                    if time.monotonic() - fed >= _FEED_SECONDS:
                        self._poll(0)
                        self._feed()
                        fed = time.monotonic()
                self._poll(0)
            else:
                self._poll(_WAIT_SECONDS)
            self._feed()
        self._release()  # the workers exit while the digests are set below
        for (path, st, node), digest in zip(self._files, self._digests, strict=True):
            if digest is None:
                read_one(path, st, node)
            else:
                set_digest(path, node, digest)
        self.close(kill=False)

    def close(self, *, kill: bool) -> None:
        """Let the workers go (EOF on their task pipes), or kill them; reap them."""
        if kill:
            for w in self._workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
        self._release()
        for w in self._workers:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(w.pid, 0)
                if status and not kill:
                    log.warning(
                        "digest worker %d: wait status %d; its files were redone", w.pid, status
                    )
        self._workers = []

    def _release(self) -> None:
        """Close our pipe ends: a worker reading its task pipe sees EOF and exits."""
        for w in self._workers:
            for fd in (w.task_w, w.result_r):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            w.task_w = w.result_r = -1

    def _cut(self) -> None:
        if self._cut_at < len(self._files):
            batch = (self._cut_at, len(self._files), self._batch_bytes)
            if self._batch_bytes >= _BIG:
                self._queue.appendleft(batch)
            else:
                self._queue.append(batch)
            self._cut_at, self._batch_bytes = len(self._files), 0
            self._poll(0)
            self._feed()

    def _feed(self) -> None:
        for w in self._workers:
            while self._queue and w.wants_more():
                batch = self._queue.popleft()
                if not w.send(batch, self._files):
                    self._queue.appendleft(batch)

    def _poll(self, timeout: float) -> None:
        waiting = {w.result_r: w for w in self._workers if w.held}
        if not waiting:
            return
        ready, _, _ = select.select(list(waiting), [], [], timeout)
        for fd in ready:
            w = waiting[fd]
            if not w.receive(self._digests):
                log.warning("digest worker %d ended early; its files are redone", w.pid)
                self._queue.extend(w.held)  # unanswered: digested here instead
                w.held.clear()


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fork_worker() -> _Worker:
    task_r, task_w = os.pipe()
    try:
        result_r, result_w = os.pipe()
    except BaseException:
        os.close(task_r)
        os.close(task_w)
        raise
    try:
        pid = os.fork()
    except BaseException:
        for fd in (task_r, task_w, result_r, result_w):
            os.close(fd)
        raise
    if pid == 0:  # pragma: no cover - runs in the child; its answers are checked
        _worker_main(task_r, result_w)
    os.close(task_r)
    os.close(result_w)
    return _Worker(pid, task_w, result_r)


def _worker_main(task_r: int, result_w: int) -> None:  # pragma: no cover - in the child
    code = 1
    try:
        # No collector in a short-lived child: a collection touches every object's
        # header and so copies the parent's whole heap, page by page (copy-on-write).
        gc.disable()
        # Keep only this worker's pipes: ends inherited from the parent's other
        # workers (or another scan on another thread) would keep them from EOF.
        low = 3
        for fd in sorted((task_r, result_w)):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        _serve(task_r, result_w)
        code = 0
    except BaseException:  # noqa: S110 - the parent redoes whatever is unanswered
        pass
    finally:
        os._exit(code)


def _serve(task_r: int, result_w: int) -> None:  # pragma: no cover - in the child
    pending = b""

    def take(n: int) -> bytes | None:
        nonlocal pending
        while len(pending) < n:
            more = os.read(task_r, 1 << 16)
            if not more:
                return None
            pending += more
        out, pending = pending[:n], pending[n:]
        return out

    while (head := take(_HEAD.size)) is not None:
        _, count = _HEAD.unpack(head)
        answer = [head]
        for _ in range(count):
            meta = take(_FILE.size)
            if meta is None:
                return
            ino, dev, size, sec, nsec, length = _FILE.unpack(meta)
            path = take(length)
            if path is None:
                return
            digest = digest_one(path, (ino, dev, size, sec * _NS + nsec))
            answer.append(_FAILED if digest is None else _OK + digest)
        _write_all(result_w, b"".join(answer))


def digest_one(path: bytes, key: tuple[int, int, int, int]) -> bytes | None:
    """The digest of the file as the scan saw it (``key``: ino, dev, size, mtime_ns), or
    None: it cannot be read or changed; the scan's reader reports that."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        if _key(os.fstat(fd)) != key:
            return None
        size = key[2]
        if size <= _READ_CHUNK:
            data = os.read(fd, size + 1)  # one more: a file that grew reads long
            while 0 < len(data) < size and (more := os.read(fd, size + 1 - len(data))):
                data += more
            if len(data) != size:
                return None
            digest = digest_bytes(_SHA256_4K, data)
        else:
            hasher = FsVerityHasher()
            while buf := os.read(fd, _READ_CHUNK):
                hasher.update(buf)
                if hasher.data_size > size:
                    return None
            if hasher.data_size != size:
                return None
            digest = hasher.digest()
        return digest if _key(os.fstat(fd)) == key else None
    except OSError:
        return None
    finally:
        os.close(fd)
