"""Progress reporting for long transfers: a callback the CLI turns into Rich bars.

``progress(task, done, total)`` is called with bytes done of ``total`` for a
named task ("push pack 2/4", "objects"); the library never prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from powernode.oci.cache import Readable

Progress = Callable[[str, int, int], None]


def no_progress(task: str, done: int, total: int) -> None:
    del task, done, total


class CountingReader:
    """Wraps a readable source and reports bytes read; seeking is passed through."""

    def __init__(self, source: Readable, task: str, total: int, progress: Progress) -> None:
        self._source = source
        self._task = task
        self._total = total
        self._progress = progress
        self._done = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._source.read(n)
        self._done += len(data)
        self._progress(self._task, min(self._done, self._total), self._total)
        return data

    def seekable(self) -> bool:
        seekable = getattr(self._source, "seekable", None)
        return bool(seekable()) if seekable is not None else False

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        pos: int = self._source.seek(offset, whence)  # type: ignore[attr-defined]
        self._done = pos
        return pos
