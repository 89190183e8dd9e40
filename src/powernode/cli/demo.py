"""`powernode demo`: seed 004's tutorial end to end on embedded defaults.

The steps are in ``powernode.demo.tutorial``; this command draws them (Rich),
owns the demo dir (a temporary one removed at the end, or ``--dir`` kept)
and turns a failed step into exit status 1 naming the step. SIGTERM is
handled like Ctrl-C so the platform child is stopped either way.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from powernode.errors import PowernodeError

if TYPE_CHECKING:
    from rich.status import Status


def default_examples_dir() -> Path:
    """``$POWERNODE_EXAMPLES`` or the checkout's ``examples/``."""
    env = os.environ.get("POWERNODE_EXAMPLES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "examples"


class RichReporter:
    """Draws the demo's steps, command lines, notes, tables and progress bars."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._spinner: Status | None = None
        self._waited: int | None = None  # the last whole second printed while waiting

    def step(self, number: int, title: str) -> None:
        self.console.rule(f"[bold]{number}. {title}")

    def done(self, number: int, title: str, seconds: float) -> None:
        self.console.print(f"[green]✓[/] step {number} done in {seconds:.1f} s", highlight=False)

    def command(self, line: str) -> None:
        self.console.print(f"[dim]$[/] [cyan]{escape(line)}[/]", highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        t = Table(title=title)
        for h in headers:
            t.add_column(h, overflow="fold")
        for r in rows:
            t.add_row(*r)
        self.console.print(t)

    def progress(self, label: str, done: int, total: int) -> None:
        if not self.console.is_terminal:  # a log or a pipe: one line per unit of work
            if done < total:
                self.console.print(f"[dim]{label}: {done + 1}/{total}[/]", highlight=False)
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)
        assert self._task is not None
        self._bar.update(self._task, completed=done, description=label)
        if done >= total:
            self.close()

    def waiting(self, label: str, seconds: float) -> None:
        if not self.console.is_terminal:  # a log or a pipe: a line a second, no animation
            if self._waited is None or int(seconds) > self._waited:
                self._waited = int(seconds)
                self.console.print(f"{label} ({int(seconds)} s)", markup=False, highlight=False)
            return
        text = f"{escape(label)} [dim]({seconds:.0f} s)[/]"
        if self._spinner is None:
            self._spinner = self.console.status(text)
            self._spinner.start()
        else:
            self._spinner.update(text)

    def waited(self, label: str, seconds: float) -> None:
        self._waited = None
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    def close(self) -> None:
        """Stop a progress bar or spinner still drawn (a step failed or was interrupted)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar, self._task = None, None
        self.waited("", 0.0)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def demo(
    examples: Annotated[
        Path | None,
        typer.Option("--examples", help="Examples directory (default: the checkout's examples/)."),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Keep the demo's files (keys, registry, artifacts, platform data) here; "
            "it must not exist or be empty. Default: a temporary directory, removed at the end.",
        ),
    ] = None,
    agent: Annotated[
        bool,
        typer.Option(
            "--agent/--no-agent",
            help="Phase 2 as root: TLS, enroll the agent, mount the union, upgrade a module.",
        ),
    ] = True,
    packages: Annotated[
        bool,
        typer.Option(
            "--packages/--no-packages",
            help="Build each module with its Debian packages (mmdebstrap; minutes the first "
            "time, cached after) instead of its rootfs/ only.",
        ),
    ] = False,
) -> None:
    """Seed 004's tutorial end to end: build, sign, ingest, promote, assign, drift."""
    from powernode.demo.tutorial import DemoConfig, run_demo  # noqa: PLC0415

    console = Console()
    if directory is not None:
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            typer.echo(
                f"demo: {directory} exists and is not an empty directory; "
                "give a new path to --dir (or remove it)",
                err=True,
            )
            raise typer.Exit(2)
        directory.mkdir(parents=True, exist_ok=True)
        workdir = directory.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="powernode-demo-"))
    console.print(
        f"demo dir: {workdir}" + ("" if directory else " (temporary, removed at the end)"),
        markup=False,
        highlight=False,
    )
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    node_agent = agent and os.geteuid() == 0
    if not node_agent:
        why = "--no-agent" if not agent else "not root (mounting the union needs root)"
        console.print(f"phase 2 (the agent mounts the modules) skipped: {why}", highlight=False)
    config = DemoConfig(
        workdir=workdir,
        examples=(examples or default_examples_dir()).resolve(),
        node_agent=node_agent,
        packages=packages,
    )
    reporter = RichReporter(console)
    try:
        result = run_demo(config, reporter)
    except PowernodeError as e:
        typer.echo(f"demo failed: {e}", err=True)  # unwrapped: one line to grep
        raise typer.Exit(1) from e
    except KeyboardInterrupt as e:
        typer.echo(
            "demo interrupted: the platform was stopped and anything mounted was unmounted",
            err=True,
        )
        raise typer.Exit(130) from e
    finally:
        reporter.close()
        signal.signal(signal.SIGTERM, previous)
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
    console.rule("[bold green]demo finished")
    summary = Table(title="summary")
    summary.add_column("step")
    summary.add_column("seconds", justify="right")
    for title, seconds in result.timings:
        summary.add_row(title, f"{seconds:.1f}")
    summary.add_row("[bold]total[/]", f"[bold]{result.total_seconds:.1f}[/]")
    console.print(summary)
    console.print(
        f"template {result.template}: {len(result.version_ids)} modules live, instance "
        f"{result.instance_id} drift {_flag(result.drift_before)} → {_flag(result.drift_after)}"
        + (
            " (agent, union mounted and torn down)"
            if result.node_agent
            else " (heartbeat stand-in)"
        ),
        markup=False,
        highlight=False,
    )
    if directory is not None:
        console.print(f"files kept in {workdir}", markup=False, highlight=False)


def _flag(value: bool | None) -> str:
    return "unknown" if value is None else str(value).lower()
