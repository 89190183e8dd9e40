"""Fetch the objects a node lacks from an artifact's packs, each checked by its name.

Missing objects are grouped into *runs*: neighbours in one pack whose gaps
are small (reading a few unwanted bytes is cheaper than another request),
capped in length so several runs download in parallel. Each run is one
HTTP ``Range`` request (``Registry.read_blob_range``); its bytes are split
into objects, each written to a temporary file while its fs-verity digest
is computed, and only an object whose digest equals its name is committed
(fsync, rename). A part of a pack cannot be checked against the pack's
sha256, but the object names come from the index, which the manifest's
digest covers, so every byte that lands is verified.

A registry that ignores ``Range`` (200 instead of 206) makes the fetcher
download each needed pack whole, verified by its layer digest, and cut the
objects out of that copy. Any error stops all runs, removes every temporary
file and re-raises; objects committed before it are valid and stay.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import DigestMismatchError, TransportError
from powernode.node.store import ModuleStore
from powernode.oci.digest import CHUNK_SIZE
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.errors import RangeNotSupportedError
from powernode.oci.ranges import read_range_into
from powernode.oci.registry import Registry
from powernode.publish.format import Descriptor, ObjectEntry
from powernode.publish.progress import Progress
from powernode.publish.store import BatchCommitter, discard_staged
from powernode.verity.fsverity import FsVerityHasher

log = logging.getLogger(__name__)

_POLL = 0.5  # seconds between checks while the first run waits for its answer


@dataclass(frozen=True)
class FetchTuning:
    """How objects are grouped into requests and how many run at once."""

    max_gap: int = 64 << 10  # read through gaps up to this size rather than split a run
    max_run: int = 16 << 20  # split longer runs so workers share a big pack
    workers: int = 4


@dataclass(frozen=True)
class Run:
    """One ranged read: bytes ``[start, end)`` of pack ``pack`` holding ``entries``."""

    pack: int
    start: int
    end: int
    entries: tuple[ObjectEntry, ...]


def plan_runs(missing: Iterable[ObjectEntry], tuning: FetchTuning) -> list[Run]:
    """Group objects into runs (pure; objects of a run are in offset order)."""
    runs: list[Run] = []
    current: list[ObjectEntry] = []
    for entry in sorted(missing, key=lambda e: (e.pack, e.offset)):
        if current:
            head, last = current[0], current[-1]
            gap = entry.offset - (last.offset + last.size)
            if (
                entry.pack != head.pack
                or gap > tuning.max_gap
                or entry.offset + entry.size - head.offset > tuning.max_run
            ):
                runs.append(_run(current))
                current = []
        current.append(entry)
    if current:
        runs.append(_run(current))
    return runs


def _run(entries: list[ObjectEntry]) -> Run:
    last = entries[-1]
    return Run(entries[0].pack, entries[0].offset, last.offset + last.size, tuple(entries))


class _Splitter:
    """Cuts a run's byte stream into verified, staged object files."""

    def __init__(self, store: ModuleStore, run: Run, what: str) -> None:
        self.store = store
        self.run = run
        self.what = what
        self.pos = run.start
        self.i = 0
        self.fd: int | None = None
        self.tmp: Path | None = None
        self.hasher = FsVerityHasher()
        self.staged: list[tuple[Path, str]] = []

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            if self.i >= len(self.run.entries):
                raise TransportError(f"{self.what}: more bytes than the run holds")
            entry = self.run.entries[self.i]
            if self.pos < entry.offset:
                skip = min(len(view), entry.offset - self.pos)
                view, self.pos = view[skip:], self.pos + skip
                continue
            take = min(len(view), entry.offset + entry.size - self.pos)
            if self.fd is None:
                self.fd, self.tmp = self.store.temp_file(self.store.objects.root / entry.hex[:2])
                self.hasher = FsVerityHasher()
            part = view[:take]
            self.hasher.update(part)
            while part:
                part = part[os.write(self.fd, part) :]
            view, self.pos = view[take:], self.pos + take
            if self.pos == entry.offset + entry.size:
                self._close_object(entry)

    def _close_object(self, entry: ObjectEntry) -> None:
        assert self.fd is not None and self.tmp is not None
        fd, tmp = self.fd, self.tmp
        self.fd = self.tmp = None
        # closed now, not at commit: a run of small objects would hold thousands
        # of descriptors (the usual soft limit is 1024); the commit reopens
        # only when it fsyncs files one by one
        os.close(fd)
        actual = self.hasher.digest().hex()
        if actual != entry.hex:
            tmp.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"object {entry.name} from {self.what} at offset {entry.offset}",
                f"sha256:{entry.hex}",
                f"sha256:{actual}",
            )
        self.staged.append((tmp, entry.name))
        self.i += 1

    def finish(self) -> list[tuple[Path, str]]:
        if self.i != len(self.run.entries):
            raise TransportError(
                f"{self.what}: the data ended at byte {self.pos} of {self.run.end}; "
                "the download was truncated"
            )
        return self.staged

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
        discard_staged(self.staged)
        self.fd = self.tmp = None
        self.staged = []


@dataclass
class FetchStats:
    bytes_downloaded: int = 0
    objects_fetched: int = 0
    ranges_ignored: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Fetcher:
    def __init__(
        self,
        registry: Registry,
        repository: str,
        packs: Sequence[Descriptor],
        store: ModuleStore,
        *,
        total: int,
        progress: Progress,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.packs = packs
        self.store = store
        self.total = total
        self.progress = progress
        self.stats = FetchStats()
        self.stop = threading.Event()
        self.committer = BatchCommitter(store, poll=_POLL)
        self.answered = threading.Event()  # the first run knows whether Range works
        self.whole: dict[int, Path] = {}
        self.whole_locks = {n: threading.Lock() for n in range(len(packs))}

    def _count(self, n: int) -> None:
        with self.stats._lock:
            self.stats.bytes_downloaded += n
            done = self.stats.bytes_downloaded
        self.progress("objects", min(done, self.total), self.total)

    def run(self, run: Run) -> None:
        pack = self.packs[run.pack]
        what = f"pack {run.pack} ({pack.digest})"
        splitter = _Splitter(self.store, run, what)
        try:
            if self.stats.ranges_ignored:
                self._from_whole(run, splitter)
            else:
                try:
                    self._ranged(run, splitter)
                except RangeNotSupportedError as e:
                    log.warning("%s; downloading whole packs instead", e)
                    self.stats.ranges_ignored = True
                    splitter.abort()
                    splitter = _Splitter(self.store, run, what)
                    self._from_whole(run, splitter)
            staged = splitter.finish()
            splitter.staged = []
            if not self.committer.submit(staged):
                discard_staged(staged)
                raise _Stopped  # the commit failed: its error is the one reported
        except BaseException:
            splitter.abort()
            raise
        finally:
            self.answered.set()

    def _ranged(self, run: Run, splitter: _Splitter) -> None:
        digest = self.packs[run.pack].digest

        def sink(chunk: memoryview | bytes) -> None:
            self.answered.set()  # a 206 came: the registry honours Range
            if self.stop.is_set():
                raise _Stopped
            self._count(len(chunk))
            splitter.feed(chunk)

        length = run.end - run.start
        if isinstance(self.registry, DistributionRegistry):
            read_range_into(self.registry, self.repository, digest, run.start, length, sink=sink)
            return
        chunks = self.registry.read_blob_range(self.repository, digest, run.start, length)
        try:
            for chunk in chunks:
                sink(chunk)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _from_whole(self, run: Run, splitter: _Splitter) -> None:
        path = self._whole_pack(run.pack)
        with path.open("rb") as f:
            f.seek(run.start)
            remaining = run.end - run.start
            while remaining:
                if self.stop.is_set():
                    raise _Stopped
                chunk = f.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise TransportError(f"{path}: shorter than pack {run.pack}")
                remaining -= len(chunk)
                splitter.feed(chunk)

    def _whole_pack(self, n: int) -> Path:
        with self.whole_locks[n]:
            if n in self.whole:
                return self.whole[n]
            pack = self.packs[n]
            fd, tmp = self.store.temp_file(self.store.objects.root)
            os.close(fd)
            try:
                self.registry.pull_blob_to(self.repository, pack.digest, tmp, size=pack.size)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self.whole[n] = tmp
            self._count(pack.size)
            return tmp

    def cleanup(self) -> None:
        for path in self.whole.values():
            path.unlink(missing_ok=True)


class _Stopped(Exception):
    """Another run failed; this one gives up quietly."""


def fetch_objects(
    registry: Registry,
    repository: str,
    packs: Sequence[Descriptor],
    missing: Sequence[ObjectEntry],
    store: ModuleStore,
    *,
    progress: Progress,
    tuning: FetchTuning | None = None,
) -> FetchStats:
    """Download ``missing`` objects into ``store``; raise on the first error of any run."""
    tuning = tuning or FetchTuning()
    runs = plan_runs(missing, tuning)
    total = sum(r.end - r.start for r in runs)
    fetcher = _Fetcher(registry, repository, packs, store, total=total, progress=progress)
    try:
        if runs:
            _run_all(fetcher, runs, max(1, tuning.workers))
    except BaseException:
        fetcher.stop.set()
        try:
            fetcher.committer.close()  # verified objects queued before the error stay
        except Exception as e:  # the run's error is the one to report
            log.warning("committing the objects fetched before the failure: %s", e)
        raise
    finally:
        fetcher.cleanup()
    fetcher.stats.objects_fetched = fetcher.committer.close()
    return fetcher.stats


def _run_all(fetcher: _Fetcher, runs: list[Run], workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # The first run starts alone: its answer (206 or 200) tells whether
        # the registry honours Range before several workers would each
        # discover that it does not. The others start at its first bytes.
        futures = [pool.submit(fetcher.run, runs[0])]
        while not fetcher.answered.wait(_POLL) and not futures[0].done():
            pass
        if not (futures[0].done() and futures[0].exception() is not None):
            futures += [pool.submit(fetcher.run, r) for r in runs[1:]]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if not any(f.exception() is not None for f in done):
            return
        fetcher.stop.set()
        wait(futures)
    errors = [
        e for f in futures if (e := f.exception()) is not None and not isinstance(e, _Stopped)
    ]
    if not errors:
        fetcher.committer.close()  # raises the commit error that stopped the runs
    raise errors[0] if errors else TransportError("the object download stopped")
