"""Batched commits of a pull's objects into the node's store.

The store itself is :class:`powernode.node.store.ModuleStore`, shared with the agent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from powernode.node.store import ModuleStore


def discard_staged(staged: Iterable[tuple[Path, str]]) -> None:
    """Delete staged temporaries (those already renamed are gone from their temp names)."""
    for tmp, _ in staged:
        tmp.unlink(missing_ok=True)


class BatchCommitter:
    """Commits verified objects (:meth:`ModuleStore.commit_objects`) in batches on a thread.

    Downloads hand their run's objects over and go on with the next run, so
    the ``syncfs(2)`` that makes them durable overlaps the network instead
    of stalling a worker (before: 1.3 s of 4.3 s worker time in syncfs for
    256 MiB). Whatever queued while one batch was flushed becomes the next
    batch, so the number of flushes adapts to the disk.
    """

    def __init__(self, store: ModuleStore, *, poll: float = 0.5) -> None:
        self.store = store
        self.poll = poll
        self.pending: list[tuple[Path, str]] = []
        self.cond = threading.Condition()
        self.closed = False
        self.error: BaseException | None = None
        self.committed = 0
        self.thread = threading.Thread(target=self._loop, name="pull-commit", daemon=True)
        self.thread.start()

    def submit(self, items: list[tuple[Path, str]]) -> bool:
        """Queue verified objects; False (nothing queued) once a commit failed or after close."""
        with self.cond:
            if self.error is not None or self.closed:
                return False
            self.pending.extend(items)
            self.cond.notify()
            return True

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closed:
                    self.cond.wait(self.poll)
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            try:
                count = self.store.commit_objects(batch)
            except BaseException as e:
                with self.cond:
                    self.error = e
                    batch += self.pending
                    self.pending = []
                discard_staged(batch)
                return
            with self.cond:
                self.committed += count

    def close(self) -> int:
        """Commit what is queued, stop; raise the commit error if there was one."""
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.committed
