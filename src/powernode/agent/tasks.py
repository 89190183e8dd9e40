"""Task handlers by kind, and the executors that run leased tasks.

A handler takes a :class:`TaskContext` and returns the result object sent
with the ack; it raises :class:`TaskError` to fail the task, saying whether
a retry could help. An unexpected exception fails the task as retryable
(the platform bounds retries by the task's max attempts); a kind with no
handler fails it as not retryable, since no retry on this agent can help.

Executors: :class:`ThreadExecutor` (production: one daemon thread per task,
at most ``max_in_flight``, so a long task does not hold up heartbeats) and
:class:`InlineExecutor` (runs the task inside ``submit``: deterministic
tests, no threads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from powernode.errors import PowernodeError
from powernode.node.fields import JSON

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000


class TaskError(PowernodeError):
    """Raised by a handler to fail its task."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    kind: str
    payload: dict[str, JSON]
    attempt: int
    lease_expires_at: datetime
    # Set when the agent is asked to stop: long handlers may finish early.
    stopping: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class TaskOutcome:
    """What to report: ``verb`` is "ack" or "fail", ``body`` its request body."""

    task_id: str
    kind: str
    verb: str
    body: dict[str, JSON]


Handler = Callable[[TaskContext], dict[str, JSON]]


class TaskRegistry:
    """Handlers by task kind."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"task kind {kind!r} already has a handler")
        self._handlers[kind] = handler

    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def run(self, ctx: TaskContext) -> TaskOutcome:
        """Run the handler for ``ctx.kind``; never raises."""
        handler = self._handlers.get(ctx.kind)
        if handler is None:
            error = (
                f"no handler for task kind {ctx.kind!r} on this agent "
                f"(it handles: {', '.join(self.kinds()) or 'nothing'}); upgrade the agent"
            )
            return _fail(ctx, error, retryable=False)
        try:
            result = handler(ctx)
        except TaskError as e:
            return _fail(ctx, str(e), retryable=e.retryable)
        except Exception as e:
            log.exception("task %s (%s) raised", ctx.task_id, ctx.kind)
            return _fail(ctx, f"{type(e).__name__}: {e}", retryable=True)
        if not isinstance(result, dict):
            return _fail(ctx, f"handler returned {type(result).__name__}, not an object", False)
        # The attempt goes back with the outcome: the platform refuses it if the
        # lease expired and the task was leased again meanwhile.
        body: dict[str, JSON] = {"result": result, "attempt": ctx.attempt}
        return TaskOutcome(ctx.task_id, ctx.kind, "ack", body)


def _fail(ctx: TaskContext, error: str, *, retryable: bool) -> TaskOutcome:
    body: dict[str, JSON] = {
        "error": error[:MAX_ERROR_CHARS],
        "retryable": retryable,
        "attempt": ctx.attempt,
    }
    return TaskOutcome(ctx.task_id, ctx.kind, "fail", body)


# -- built-in handlers -------------------------------------------------------------------

MAX_SLEEP_SECONDS = 300.0


def _noop(ctx: TaskContext) -> dict[str, JSON]:
    return {}


def _echo(ctx: TaskContext) -> dict[str, JSON]:
    return {"echo": ctx.payload}


def _sleep(ctx: TaskContext) -> dict[str, JSON]:
    seconds = ctx.payload.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TaskError("payload.seconds: expected a number", retryable=False)
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise TaskError(f"payload.seconds: must be 0-{MAX_SLEEP_SECONDS:g}", retryable=False)
    # Deliberately not cut short by `stopping`: it stands for real work the drain waits for.
    time.sleep(seconds)
    return {"slept": seconds}


def default_registry() -> TaskRegistry:
    """The handlers every agent has: agent.noop, agent.echo, agent.sleep."""
    registry = TaskRegistry()
    registry.register("agent.noop", _noop)
    registry.register("agent.echo", _echo)
    registry.register("agent.sleep", _sleep)
    return registry


# -- executors ---------------------------------------------------------------------------

Done = Callable[[TaskOutcome], None]


class Executor(Protocol):
    def free_slots(self) -> int: ...

    def in_flight(self) -> set[str]: ...

    def submit(self, ctx: TaskContext, done: Done) -> None: ...


class InlineExecutor:
    """Runs each task to completion inside ``submit``."""

    def __init__(self, registry: TaskRegistry, max_in_flight: int = 4) -> None:
        self.registry = registry
        self.max_in_flight = max_in_flight

    def free_slots(self) -> int:
        return self.max_in_flight

    def in_flight(self) -> set[str]:
        return set()

    def submit(self, ctx: TaskContext, done: Done) -> None:
        done(self.registry.run(ctx))


class ThreadExecutor:
    """One daemon thread per task, at most ``max_in_flight`` at once.

    Daemon threads, so that a task still running when the drain gives up
    does not keep the process alive (its lease then expires and the
    platform offers the task again).
    """

    def __init__(self, registry: TaskRegistry, max_in_flight: int = 4) -> None:
        self.registry = registry
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def free_slots(self) -> int:
        with self._lock:
            return self.max_in_flight - len(self._running)

    def in_flight(self) -> set[str]:
        with self._lock:
            return set(self._running)

    def submit(self, ctx: TaskContext, done: Done) -> None:
        with self._lock:
            if len(self._running) >= self.max_in_flight:
                raise RuntimeError("executor full: the runtime must lease only free_slots()")
            self._running.add(ctx.task_id)

        def work() -> None:
            # done() before leaving the in-flight set: a drain that sees the set
            # empty must find every outcome already handed over.
            try:
                done(self.registry.run(ctx))
            finally:
                with self._lock:
                    self._running.discard(ctx.task_id)

        threading.Thread(target=work, name=f"task-{ctx.task_id}", daemon=True).start()
