"""Time and stopping: the clock the agent runs on, and how SIGTERM reaches the loop.

Seed 000 (``internal/lifecycle``): "SIGTERM → drain in-flight tasks, flush
event buffer, unmount cleanly, exit 0". The drain itself is
``Runtime.drain``; this module gives the loop a :class:`StopSignal` that a
signal handler sets, and a :class:`Clock` whose ``wait`` returns early when
it is set.

Two clocks: :class:`SystemClock` (wall time for certificates and event
timestamps, ``time.monotonic`` for scheduling so a wall-clock jump neither
stalls nor floods the loop) and :class:`ManualClock`, whose ``wait`` moves
time forward instead of sleeping, so tests and the RSS benchmark can run an
hour of heartbeats in a moment, and can move the wall clock on its own.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (scheduling only)."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` or until ``event`` is set; return whether it is set."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


class ManualClock:
    """A clock that only moves when told to, or when someone waits on it.

    ``wait`` advances both clocks by ``seconds`` (unless the event is
    already set) and returns at once. ``shift_wall`` moves only the wall
    clock, as NTP stepping the system time would.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._wall = start or datetime(2025, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self.waits = 0  # how many times someone waited (lets tests bound loops)

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += timedelta(seconds=seconds)
            self._mono += seconds

    def shift_wall(self, delta: timedelta) -> None:
        with self._lock:
            self._wall += delta

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._lock:
            self.waits += 1
        if event.is_set():
            return True
        self.advance(max(0.0, seconds))
        return event.is_set()


class StopSignal:
    """Set once to ask the service to drain and exit; remembers why."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._linked: list[threading.Event] = []

    def link(self, event: threading.Event) -> None:
        """Also set ``event`` when stopping (a loop waiting on it wakes up)."""
        self._linked.append(event)
        if self.event.is_set():
            event.set()

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()
            for event in self._linked:
                event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def install_signal_handlers(stop: StopSignal) -> None:
    """SIGTERM and SIGINT ask for a drain; a second one is ignored (the drain is bounded).

    Must be called from the main thread (Python runs handlers there).
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again while draining; the drain is bounded, waiting for it", name)
            return
        log.info("%s received: draining in-flight tasks and flushing events", name)
        stop.set(name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
