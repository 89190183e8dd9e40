"""`powernode demo`: the main job on embedded defaults.

Today: validate the example module repos and compose them into the example
templates, printing each step. Later issues extend it into seed 004's
tutorial end to end (build, sign, ingest, promote, assign, attach).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from powernode.cli.module_compose import render_plan
from powernode.errors import PowernodeError
from powernode.toolchain.localrepo import load_repo
from powernode.toolchain.localtemplate import load_template, plan


def default_examples_dir() -> Path:
    """``$POWERNODE_EXAMPLES`` or the checkout's ``examples/``."""
    env = os.environ.get("POWERNODE_EXAMPLES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "examples"


def demo(
    examples: Annotated[
        Path | None,
        typer.Option("--examples", help="Examples directory (default: the checkout's examples/)."),
    ] = None,
) -> None:
    """Validate the example modules and compose them into the example templates."""
    console = Console()
    root = examples or default_examples_dir()
    modules = sorted(p for p in (root / "modules").iterdir() if (p / "manifest.yaml").is_file())
    try:
        console.rule("[bold]1. validate the example module repos")
        for path in modules:
            repo = load_repo(path)
            console.print(
                f"[green]valid[/] {repo.name:<20} {len(repo.shipped()):>3} paths shipped"
                f"  ({path.relative_to(root)})"
            )
            for w in repo.warnings:
                console.print(f"      [yellow]warning[/] {w}", highlight=False)
        for tpl_path in sorted((root / "templates").glob("*.yaml")):
            name, assignments = load_template(tpl_path)
            console.rule(f"[bold]2. compose template {name!r} ({tpl_path.name})")
            result = plan(name, assignments)
            order = " → ".join(f"{c.name}@{c.version}" for c in result.resolution.order)
            console.print(f"dependencies resolved, install order: {order}")
            render_plan(result, console)
    except PowernodeError as e:
        Console(stderr=True).print(f"demo failed: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from e
    console.rule("[bold green]demo finished")
