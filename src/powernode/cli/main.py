"""`powernode`: the operator's and module author's command line.

Each group is imported only when it runs (:class:`powernode.cli.base.App`):
``powernode --help`` and ``powernode version`` load none of them.
"""

from __future__ import annotations

import typer

from powernode import __version__
from powernode.cli.base import App, Loaded, run

app = App(
    name="powernode",
    help="Fleet platform for immutable Linux nodes composed from signed modules.",
    add_completion=True,
)

# Each loader imports its group when it runs (not on `powernode --help`).


def _demo() -> Loaded:
    from powernode.cli.demo import demo  # noqa: PLC0415

    return demo


def _module() -> Loaded:
    from powernode.cli.module import app  # noqa: PLC0415

    return app


def _platform() -> Loaded:
    from powernode.cli.platform import app  # noqa: PLC0415

    return app


def _system() -> Loaded:
    from powernode.cli.system import app  # noqa: PLC0415

    return app


def _nodescript() -> Loaded:
    from powernode.cli.nodescript import app  # noqa: PLC0415

    return app


def _supply() -> Loaded:
    from powernode.cli.module.evidence import app  # noqa: PLC0415

    return app


def _mcp() -> Loaded:
    from powernode.cli.mcp import app  # noqa: PLC0415

    return app


def _image() -> Loaded:
    from powernode.cli.image import app  # noqa: PLC0415

    return app


def _fleet() -> Loaded:
    from powernode.cli.fleet import app  # noqa: PLC0415

    return app


def _verity() -> Loaded:
    from powernode.cli.verity import app  # noqa: PLC0415

    return app


def _composefs() -> Loaded:
    from powernode.cli.composefs import app  # noqa: PLC0415

    return app


app.add_lazy(
    "demo", _demo, "Seed 004's tutorial end to end: build, sign, ingest, promote, assign, drift."
)
app.add_lazy("module", _module, "Author, validate, compose and inspect modules.")
app.add_lazy(
    "platform", _platform, "Run and administer the platform (API server, migrations, tokens)."
)
app.add_lazy("system", _system, "Operate the fleet through the platform API.")
app.add_lazy("nodescript", _nodescript, "Sign, register and run NodeScripts on nodes.")
app.add_lazy(
    "supply",
    _supply,
    "Supply-chain evidence and verdicts, promotion policies, the vulnerability feed.",
)
app.add_lazy("mcp", _mcp, "The MCP server: fleet operations for assistants.")
app.add_lazy("fleet", _fleet, "Fleet scale: a local scaled deployment and the fleet simulator.")
app.add_lazy("verity", _verity, "fs-verity digests, computed in userspace.")
app.add_lazy("image", _image, "Build the node's boot artifacts from Debian packages.")
app.add_lazy("composefs", _composefs, "Write and read composefs images.")


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
