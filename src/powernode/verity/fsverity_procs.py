"""Level 0 of the fs-verity Merkle tree hashed on forked worker processes.

Level 0 (one hash per data block) is nearly all the work of a file digest
(fsverity.rst, "Merkle tree"). In one process the per-block hashlib call
costs ~0.8 µs of Python around ~2.7 µs of SHA-256 per 4 KiB block, and
threads contend for the GIL on that part; separate processes do not. Measured
here (2 vCPUs, 1 GiB in the page cache): one process 1.0-1.1 s, two forked
processes 0.51-0.66 s, `fsverity digest` 1.08 s.

How it runs:

- The file is cut into tasks of :data:`TASK_SIZE` bytes. Task numbers go
  through a pipe that every worker reads: pipe writes and reads of fixed
  8-byte records are atomic (pipe(7), PIPE_BUF), so each task goes to exactly
  one worker, and a worker slowed by other load on the machine simply takes
  fewer tasks.
- A worker preads its task :data:`READ_SIZE` bytes at a time (small enough to
  stay in the CPU cache between the copy and the hash), writes the block
  hashes into a slot of a shared anonymous mapping, and reports the task
  number (or the read error) on a second pipe.
- The parent hands each result on in file order, then reuses its slot for a
  new task: memory is ``2 x processes`` slots of hashes, whatever the file
  size. The levels above 0 (1/128 of the work) stay in the parent.

Workers are ``os.fork()`` children that only read, hash and write to their
pipes, and always leave with ``os._exit``; they are forked only from a
process running a single thread (:func:`fork_is_safe`). A worker that dies is noticed
(``waitpid`` while waiting on results) and the whole digest fails; on any
error the parent kills and reaps every worker it started before raising.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import gc
import mmap
import os
import select
import signal
import struct
import threading
from collections.abc import Generator
from dataclasses import dataclass

from powernode.errors import PowernodeError
from powernode.verity.fsverity_tree import VerityParams, hash_blocks

# A multiple of every valid block size (<= 64 KiB), so only the file's last
# task can end in a partial block. 8 MiB: ~7 ms of hashing, so the pipe
# round trip per task is noise and the last task leaves a worker idle briefly.
TASK_SIZE = 8 << 20
# Measured: 256 KiB reads beat 8 MiB reads by ~15 % with two workers.
READ_SIZE = 256 << 10
_TASK = struct.Struct("<q")  # task number
_DONE = struct.Struct("<qiiq")  # task number, outcome, errno, file offset
_OK, _READ_FAILED, _ENDED = 0, 1, 2
_WAIT_SECONDS = 0.2  # how often a silent wait checks that every worker lives


def fork_is_safe() -> bool:
    """True when this process runs one thread, so forking it is safe.

    A fork copies only the calling thread; a lock another thread holds at
    that moment (OpenSSL's, inside a hashlib call; the logging module's)
    stays locked forever in the child, which would then hang on its first
    hash. Callers fall back to in-process work when other threads run
    (Python 3.12 warns about such forks for the same reason).
    """
    return threading.active_count() == 1


class Level0Failure(PowernodeError):
    """Level 0 could not be computed; the caller names the file.

    ``kind``: "read" (a read failed with ``errno`` at ``offset``), "ended"
    (the file ended at ``offset``, before its size: it shrank) or "died" (a
    worker process ended early; ``detail`` says how).
    """

    def __init__(self, kind: str, *, offset: int = 0, err: int = 0, detail: str = "") -> None:
        super().__init__(kind, offset, err, detail)
        self.kind = kind
        self.offset = offset
        self.errno = err
        self.detail = detail


@dataclass(frozen=True)
class _Job:
    """What every worker shares: the file, the parameters, the result slots."""

    fd: int
    params: VerityParams
    size: int
    out: mmap.mmap  # MAP_SHARED: the workers write, the parent reads
    slots: int
    slot_bytes: int

    def slot_start(self, index: int) -> int:
        return (index % self.slots) * self.slot_bytes


@dataclass
class _Workers:
    task_r: int
    task_w: int
    done_r: int
    done_w: int
    pids: list[int]

    def close_parent_ends(self) -> None:
        """The ends only workers use; closed once every worker has its copy."""
        self.task_r = _close(self.task_r)
        self.done_w = _close(self.done_w)

    def stop(self, *, kill: bool) -> None:
        """Close the task pipe (workers leave at EOF); kill first when failing."""
        if kill:
            for pid in self.pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.close_parent_ends()
        self.task_w = _close(self.task_w)
        self.done_r = _close(self.done_r)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pids.clear()

    def check_alive(self) -> None:
        for pid in list(self.pids):
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                self.pids.remove(pid)
                raise Level0Failure("died", detail=f"process {pid}, wait status {status}")


def _close(fd: int) -> int:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    return -1


def level0_in_processes(
    fd: int, params: VerityParams, size: int, processes: int
) -> Generator[tuple[bytes, int], None, None]:
    """(level-0 hashes, data bytes) per task of ``fd``'s first ``size`` bytes, in order.

    Raises :class:`Level0Failure` when a worker's read fails, meets the end
    of the file early, or the worker dies. Close the generator
    (``contextlib.closing``) to stop early: the workers are killed and reaped.
    """
    tasks = (size + TASK_SIZE - 1) // TASK_SIZE
    if not tasks:
        return
    processes = max(1, min(processes, tasks))
    slots = min(2 * processes, tasks)
    slot_bytes = TASK_SIZE // params.block_size * params.digest_size
    job = _Job(fd, params, size, mmap.mmap(-1, slots * slot_bytes), slots, slot_bytes)
    workers = _Workers(-1, -1, -1, -1, [])
    failed = True
    try:
        workers.task_r, workers.task_w = os.pipe()
        workers.done_r, workers.done_w = os.pipe()
        for _ in range(processes):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child; its results are checked
                _worker_main(job, workers)
            workers.pids.append(pid)
        workers.close_parent_ends()
        sent = 0
        while sent < slots:
            _send(workers, sent)
            sent += 1
        done: set[int] = set()
        pending = b""
        for index in range(tasks):
            while index not in done:
                pending = _wait_results(workers, pending, done)
            done.discard(index)
            length = min(TASK_SIZE, size - index * TASK_SIZE)
            blocks = (length + params.block_size - 1) // params.block_size
            start = job.slot_start(index)
            hashes = job.out[start : start + blocks * params.digest_size]
            if sent < tasks:  # the slot is read: hand it to the next task
                _send(workers, sent)
                sent += 1
            yield hashes, length
        failed = False
    finally:
        workers.stop(kill=failed)
        job.out.close()


def _send(workers: _Workers, index: int) -> None:
    try:
        os.write(workers.task_w, _TASK.pack(index))
    except BrokenPipeError as e:  # no worker left to read it
        workers.check_alive()
        raise Level0Failure("died", detail="every worker's task pipe closed") from e


def _wait_results(workers: _Workers, pending: bytes, done: set[int]) -> bytes:
    """Read finished task numbers into ``done``; returns an incomplete record's bytes."""
    ready, _, _ = select.select([workers.done_r], [], [], _WAIT_SECONDS)
    if not ready:
        workers.check_alive()
        return pending
    data = os.read(workers.done_r, _DONE.size * 128)
    if not data:
        workers.check_alive()
        raise Level0Failure("died", detail="every worker's pipe closed")
    pending += data
    whole = len(pending) - len(pending) % _DONE.size
    for index, outcome, err, offset in _DONE.iter_unpack(pending[:whole]):
        if outcome != _OK:
            kind = "ended" if outcome == _ENDED else "read"
            raise Level0Failure(kind, offset=offset, err=err)
        done.add(index)
    return pending[whole:]


def _worker_main(job: _Job, workers: _Workers) -> None:  # pragma: no cover - in the child
    code = 1
    try:
        # No collector in a short-lived child: a collection touches every object's
        # header and so copies the parent's whole heap, page by page (copy-on-write).
        gc.disable()
        # Keep only what this worker uses: a pipe end inherited from another
        # digest running on another thread would keep its workers from ever
        # seeing EOF.
        low = 3
        for k in sorted({job.fd, workers.task_r, workers.done_w}):
            os.closerange(low, k)
            low = k + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        _work(job, workers.task_r, workers.done_w)
        code = 0
    except BaseException:  # noqa: S110 - the parent sees the exit code and reports
        pass
    finally:
        os._exit(code)


def _work(job: _Job, task_r: int, done_w: int) -> None:  # pragma: no cover - in the child
    buf = bytearray(READ_SIZE)
    mv = memoryview(buf)
    bs = job.params.block_size
    while True:
        record = os.read(task_r, _TASK.size)
        if not record:
            return  # EOF: the parent has no more tasks
        (index,) = _TASK.unpack(record)
        pos = job.slot_start(index)
        off = index * TASK_SIZE
        end = min(job.size, off + TASK_SIZE)
        outcome, err, at = _OK, 0, 0
        while off < end and outcome == _OK:
            want = min(READ_SIZE, end - off)
            got = 0
            while got < want:
                try:
                    n = os.preadv(job.fd, [mv[got:want]], off + got)
                except OSError as e:
                    outcome, err, at = _READ_FAILED, e.errno or errno_mod.EIO, off + got
                    break
                if n == 0:
                    outcome, at = _ENDED, off + got
                    break
                got += n
            if outcome != _OK:
                break
            padded = want + (-want % bs)
            if padded != want:  # the file's last block: zero-padded (fsverity.rst)
                mv[want:padded] = bytes(padded - want)
            hashes = hash_blocks(job.params, mv[:padded])
            job.out[pos : pos + len(hashes)] = hashes
            pos += len(hashes)
            off += want
        os.write(done_w, _DONE.pack(index, outcome, err, at))
