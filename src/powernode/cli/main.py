"""`powernode`: the operator's and module author's command line.

Each group is imported only when it runs (:class:`powernode.cli.base.App`):
``powernode --help`` and ``powernode version`` load none of them.
"""

from __future__ import annotations

import typer

from powernode import __version__
from powernode.cli.base import App, run

app = App(
    name="powernode",
    help="Fleet platform for immutable Linux nodes composed from signed modules.",
)
app.add_lazy(
    "demo",
    "powernode.cli.demo:demo",
    "Seed 004's tutorial end to end: build, sign, ingest, promote, assign, drift.",
)
app.add_lazy("module", "powernode.cli.module:app", "Author, validate, compose and inspect modules.")
app.add_lazy(
    "platform",
    "powernode.cli.platform:app",
    "Run and administer the platform (API server, migrations, tokens).",
)
app.add_lazy("system", "powernode.cli.system:app", "Operate the fleet through the platform API.")
app.add_lazy(
    "supply",
    "powernode.cli.module_evidence:app",
    "Supply-chain evidence and verdicts, promotion policies, the vulnerability feed.",
)
app.add_lazy("mcp", "powernode.cli.mcp:app", "The MCP server: fleet operations for assistants.")
app.add_lazy("verity", "powernode.cli.verity:app", "fs-verity digests, computed in userspace.")
app.add_lazy("composefs", "powernode.cli.composefs:app", "Write and read composefs images.")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    import logging  # noqa: PLC0415 - not on --help's path (bench/bench_cli_start.py)

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


@app.command()
def version() -> None:
    """Print powernode's version."""
    typer.echo(__version__)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
