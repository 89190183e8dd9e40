"""`powernode module compose`: the composition of module repos into a template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from powernode.core.priority import priority_key
from powernode.errors import CompositionError, PowernodeError
from powernode.toolchain.localtemplate import (
    TemplatePlan,
    assignments_for_repos,
    load_template,
    plan,
)


def plan_from_args(paths: list[Path], template: Path | None) -> TemplatePlan:
    """One service call behind the command: a template file, or bare repos."""
    if template is not None:
        name, assignments = load_template(template)
        extra = assignments_for_repos(paths) if paths else []
        return plan(name, [*assignments, *extra])
    return plan("local", assignments_for_repos(paths))


def plan_to_dict(p: TemplatePlan) -> dict[str, object]:
    return {
        "template": p.name,
        "assignments": [
            {
                "module": a.repo.name,
                "path": str(a.repo.path),
                "version": str(a.version),
                "category": a.category,
                "variety": a.variety.value,
                "parent": a.parent,
                "effective_priority": a.priority,
            }
            for a in p.assignments
        ],
        "install_order": [c.name for c in p.resolution.order],
        "composition": p.composition.to_dict(),
    }


def render_plan(p: TemplatePlan, console: Console) -> None:
    stack = Table(title=f"template {p.name}: stack (lowest first)")
    for col in ("module", "version", "category", "variety", "parent", "priority"):
        stack.add_column(col)
    for a in sorted(p.assignments, key=lambda a: priority_key(a.repo.name, a.priority, a.variety)):
        stack.add_row(
            a.repo.name,
            str(a.version),
            a.category,
            a.variety.value,
            a.parent or "",
            str(a.priority),
        )
    console.print(stack)
    union = Table(title="union: who provides each file")
    headers, rows = p.composition.table_rows()
    for h in headers:
        union.add_column(h)
    for row in rows:
        union.add_row(*row)
    console.print(union)


def register(app: typer.Typer) -> None:
    """Add `compose` to `powernode module`."""

    @app.command("compose")
    def compose_cmd(
        paths: Annotated[
            list[Path] | None, typer.Argument(help="Module repos (or their manifest.yaml).")
        ] = None,
        template: Annotated[
            Path | None,
            typer.Option("--template", "-t", help="A template file assigning module repos."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
    ) -> None:
        """Compose module repos into a template: stack order, winners, masks, conflicts."""
        err = Console(stderr=True, soft_wrap=True)
        if not paths and template is None:
            err.print("error: give module repo paths or --template FILE")
            raise typer.Exit(2)
        try:
            result = plan_from_args(list(paths or []), template)
        except CompositionError as e:
            err.print(f"error: composition failed: {e}", markup=False, highlight=False)
            for c in e.conflicts:
                err.print(f"  conflict: {c}", markup=False, highlight=False)
            raise typer.Exit(1) from e
        except PowernodeError as e:
            err.print(f"error: {e}", markup=False, highlight=False)
            raise typer.Exit(1) from e
        if as_json:
            typer.echo(json.dumps(plan_to_dict(result), indent=2, sort_keys=True))
        else:
            render_plan(result, Console())
