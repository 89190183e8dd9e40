"""fs-verity file digests in userspace, equal to ``fsverity digest`` (fsverity-utils).

The kernel here has no fs-verity, and composefs names objects by their
fs-verity digest, so powernode computes it itself. The tree and descriptor
are in :mod:`powernode.verity.fsverity_tree`; this module adds the file
reader, which hashes level 0 (one hash per data block, nearly all the work)
of several chunks at once: on forked worker processes for large files
(:mod:`powernode.verity.fsverity_procs`; each block's hashlib call carries
~0.8 µs of Python that threads must take turns on under the GIL), else on a
thread pool (hashlib releases the GIL for buffers of 2 KiB and more, so
threads overlap the SHA-256 itself and the reads).
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import logging
import os
import queue
import stat
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from powernode.errors import ConfigError, DataError
from powernode.verity.fsverity_procs import Level0Failure, fork_is_safe, level0_in_processes
from powernode.verity.fsverity_tree import (
    FsVerityHasher,
    VerityParams,
    digest_bytes,
    hash_blocks,
    verity_params,
)

__all__ = [
    "PROCESS_MIN_SIZE",
    "FsVerityHasher",
    "VerityFileError",
    "format_digest",
    "fsverity_digest",
    "fsverity_digest_file",
]

log = logging.getLogger(__name__)

# Read size per task: large enough that per-read overhead vanishes, small
# enough that (2 x threads) buffers stay a few tens of MiB. A multiple of every
# valid block size (<= 64 KiB), so only the file's last block is ever padded.
CHUNK_SIZE = 8 << 20
_MAX_THREADS = 64
# From this size up, the default is one worker process per usable CPU: a
# fork costs ~1-3 ms, 32 MiB costs ~27 ms to hash on one CPU.
PROCESS_MIN_SIZE = 32 << 20


class VerityFileError(DataError, OSError):
    """A file whose digest cannot be computed: it cannot be opened or read,
    is not a regular file, or changed size while being read.

    Also an :class:`OSError` (``errno``, ``strerror``, ``filename`` set) so
    callers that already handle OS errors keep doing so.
    """

    def __init__(self, path: str, err: int, strerror: str, hint: str) -> None:
        super().__init__(err, strerror, path)
        self.message = f"{path}: {strerror}; {hint}"

    def __str__(self) -> str:
        return self.message


def fsverity_digest(
    data: bytes | bytearray | memoryview,
    *,
    algorithm: str = "sha256",
    block_size: int = 4096,
    salt: bytes = b"",
) -> bytes:
    """The raw fs-verity digest of ``data`` (32 bytes for sha256, 64 for sha512)."""
    return digest_bytes(verity_params(algorithm, block_size, salt), data)


def format_digest(digest: bytes, algorithm: str = "sha256") -> str:
    """``"sha256:<hex>"``, the form ``fsverity digest`` prints."""
    verity_params(algorithm)
    return f"{algorithm}:{digest.hex()}"


def fsverity_digest_file(
    path: str | os.PathLike[str],
    *,
    algorithm: str = "sha256",
    block_size: int = 4096,
    salt: bytes = b"",
    threads: int | None = None,
    processes: int | None = None,
) -> bytes:
    """The raw fs-verity digest of the file at ``path``.

    Reads the file in chunks (memory stays bounded for any size) and hashes
    them on ``processes`` forked worker processes when that is more than 1,
    else on ``threads`` threads. Defaults: ``threads`` is the CPUs this
    process may run on (``os.cpu_count()`` where that is unknown; at most
    64); ``processes`` is that count too for files of
    :data:`PROCESS_MIN_SIZE` and more when ``threads`` is not given, else 1
    (so ``threads=1`` keeps everything in this process). A process running
    other threads is never forked (``processes`` become threads). Raises
    :class:`VerityFileError` when the file cannot be read, ConfigError for
    bad parameters.
    """
    params = verity_params(algorithm, block_size, salt)
    auto = threads is None and processes is None
    if threads is None:
        threads = min(_usable_cpus(), _MAX_THREADS)
    _check_count("threads", threads)
    if processes is not None:
        _check_count("processes", processes)
    name = os.fsdecode(path)
    try:
        # O_NONBLOCK: a fifo in place of a file must be refused below, not block the open
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise VerityFileError(
            name,
            e.errno or 0,
            f"cannot open for reading: {e.strerror}",
            "check that the path exists and is readable",
        ) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VerityFileError(
                name,
                errno_mod.EINVAL,
                "not a regular file",
                "fs-verity digests are defined for regular files only",
            )
        size = st.st_size
        with contextlib.suppress(OSError):  # a hint: larger readahead for cold files
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        hasher = FsVerityHasher(algorithm=algorithm, block_size=block_size, salt=salt)
        if processes is None:
            processes = threads if auto and size >= PROCESS_MIN_SIZE else 1
        results: Generator[tuple[bytes, int], None, None]
        if processes > 1 and not fork_is_safe():
            log.debug("fs-verity digest of %s: other threads run, not forking", name)
            threads, processes = max(threads, processes), 1
        if processes > 1:
            log.debug("fs-verity digest of %s: %d bytes, %d processes", name, size, processes)
            results = _from_processes(fd, name, params, size, processes)
        else:
            reader = _ChunkReader(fd, name, params)
            chunks = [(off, min(CHUNK_SIZE, size - off)) for off in range(0, size, CHUNK_SIZE)]
            workers = min(threads, len(chunks))
            log.debug("fs-verity digest of %s: %d bytes, %d thread(s)", name, size, workers)
            results = reader.parallel(chunks, workers) if workers > 1 else reader.serial(chunks)
        # closing(): no worker may still read from fd when it is closed below
        with contextlib.closing(results):
            for hashes, length in results:
                hasher.add_block_hashes(hashes, length)
        _check_eof(fd, name, size)
        return hasher.digest()
    finally:
        os.close(fd)


def _check_count(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_THREADS:
        raise ConfigError(f"{what} must be an integer from 1 to {_MAX_THREADS}, not {value!r}")


def _from_processes(
    fd: int, name: str, params: VerityParams, size: int, processes: int
) -> Generator[tuple[bytes, int], None, None]:
    """Level 0 from worker processes, their failures as :class:`VerityFileError`."""
    try:
        yield from level0_in_processes(fd, params, size, processes)
    except Level0Failure as e:
        if e.kind == "ended":
            raise _changed(name, f"ended at offset {e.offset}") from e
        if e.kind == "read":
            raise VerityFileError(
                name,
                e.errno,
                f"read failed at offset {e.offset}: {os.strerror(e.errno)}",
                "check the file and the device it is on",
            ) from e
        raise VerityFileError(
            name,
            errno_mod.EIO,
            f"a hashing worker process ended early ({e.detail})",
            "hash it again; if that keeps happening, pass processes=1",
        ) from e


def _usable_cpus() -> int:
    # sched_getaffinity honours taskset/cgroup cpusets, which os.cpu_count()
    # (the host's count) does not
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _ChunkReader:
    """Reads chunks of one open file and hashes their data blocks (level 0)."""

    fd: int
    name: str
    params: VerityParams

    def serial(self, chunks: list[tuple[int, int]]) -> Generator[tuple[bytes, int], None, None]:
        buf = bytearray(self.padded(chunks[0][1]) if chunks else 0)  # the first is the largest
        for off, length in chunks:
            yield self.hash_chunk(buf, off, length), length

    def parallel(
        self, chunks: list[tuple[int, int]], workers: int
    ) -> Generator[tuple[bytes, int], None, None]:
        """(hashes, data length) per chunk, in file order, hashed on ``workers`` threads."""
        # A fixed set of buffers, one per task in flight: reused, so no 8 MiB
        # allocation (and its page faults) per chunk; 2 per worker keeps every
        # worker busy while the caller collects results in order.
        in_flight = 2 * workers
        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(in_flight):
            free.put(bytearray(CHUNK_SIZE))

        def task(off: int, length: int) -> bytes:
            buf = free.get_nowait()  # never empty: at most in_flight tasks exist
            try:
                return self.hash_chunk(buf, off, length)
            finally:
                free.put(buf)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fsverity") as pool:
            pending: deque[tuple[Future[bytes], int]] = deque()
            try:
                for off, length in chunks:
                    if len(pending) == in_flight:
                        fut, done_len = pending.popleft()
                        yield fut.result(), done_len
                    pending.append((pool.submit(task, off, length), length))
                while pending:
                    fut, done_len = pending.popleft()
                    yield fut.result(), done_len
            finally:
                # on an error or early close: drop queued tasks; leaving the
                # `with` waits for the running ones
                for fut, _ in pending:
                    fut.cancel()

    def padded(self, length: int) -> int:
        return length + (-length % self.params.block_size)

    def hash_chunk(self, buf: bytearray, off: int, length: int) -> bytes:
        """Read ``length`` bytes at ``off`` into ``buf`` and hash its blocks."""
        mv = memoryview(buf)
        got = 0
        while got < length:
            try:
                n = os.preadv(self.fd, [mv[got:length]], off + got)
            except OSError as e:
                raise VerityFileError(
                    self.name,
                    e.errno or 0,
                    f"read failed at offset {off + got}: {e.strerror}",
                    "check the file and the device it is on",
                ) from e
            if n == 0:
                raise _changed(self.name, f"ended at offset {off + got}")
            got += n
        end = self.padded(length)
        if end != length:  # the file's last block: zero-padded (fsverity.rst)
            mv[length:end] = bytes(end - length)
        return hash_blocks(self.params, mv[:end])


def _check_eof(fd: int, name: str, size: int) -> None:
    try:
        extra = os.pread(fd, 1, size)
    except OSError as e:
        raise VerityFileError(
            name,
            e.errno or 0,
            f"read failed at offset {size}: {e.strerror}",
            "check the file and the device it is on",
        ) from e
    if extra:
        raise _changed(name, f"grew past {size} bytes")


def _changed(name: str, what: str) -> VerityFileError:
    return VerityFileError(
        name,
        errno_mod.EIO,
        f"file changed while being hashed ({what})",
        "hash it again once nothing is writing to it",
    )
