"""Numbered, timed demo steps; a failure names its step.

The demo reports through a :class:`Reporter` the command line implements
(only ``powernode.cli`` prints). A step that fails raises
:class:`DemoStepError` naming the step, so ``powernode demo`` exits non-zero
saying which step of the tutorial broke and why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from powernode.errors import PowernodeError

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """What the demo shows, as it happens."""

    def step(self, number: int, title: str) -> None:
        """Step ``number`` starts."""

    def done(self, number: int, title: str, seconds: float) -> None:
        """Step ``number`` finished after ``seconds``."""

    def command(self, line: str) -> None:
        """A command line the operator would type (``$ powernode …``)."""

    def note(self, text: str) -> None:
        """A line of explanation or result."""

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A table of results."""

    def progress(self, label: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of the work named ``label``."""

    def waiting(self, label: str, seconds: float) -> None:
        """Still waiting for what ``label`` says, ``seconds`` so far (called again and again)."""

    def waited(self, label: str, seconds: float) -> None:
        """The wait named ``label`` is over, after ``seconds``."""


class DemoStepError(PowernodeError):
    """A demo step failed; ``step`` is its title, ``number`` its position."""

    def __init__(self, number: int, step: str, cause: str) -> None:
        self.number = number
        self.step = step
        super().__init__(f"step {number} ({step}) failed: {cause}")


@dataclass
class Steps:
    """Runs the demo's steps in order, timing each and naming the one that fails."""

    reporter: Reporter
    clock: Callable[[], float] = time.monotonic
    timings: list[tuple[str, float]] = field(default_factory=list)
    _count: int = 0

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self._count += 1
        number = self._count
        self.reporter.step(number, title)
        start = self.clock()
        try:
            yield
        except DemoStepError:
            raise
        except (PowernodeError, httpx.HTTPError, OSError) as e:
            log.debug("step %d (%s) failed", number, title, exc_info=True)
            raise DemoStepError(number, title, str(e) or type(e).__name__) from e
        except (KeyError, ValueError, TypeError) as e:
            # An answer without a field the step reads (another platform version?).
            log.debug("step %d (%s) failed", number, title, exc_info=True)
            raise DemoStepError(number, title, f"unexpected answer: {type(e).__name__}: {e}") from e
        seconds = self.clock() - start
        self.timings.append((title, seconds))
        self.reporter.done(number, title, seconds)

    @property
    def total_seconds(self) -> float:
        return sum(s for _, s in self.timings)
