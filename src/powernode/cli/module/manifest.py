"""`powernode module validate PATH…` and `powernode module schema`.

``validate`` is offline: it reads each manifest (a module repo directory's manifest.yaml,
or a manifest file) and prints one ``file:line:column: field: message`` line per problem
and ``file:line:column: warning: field: message`` per warning to stderr, like a compiler,
so editors can jump to them. Exit status (the convention of every command): 0 all
valid; 1 any invalid, or a path that does not exist or a directory without
manifest.yaml (said before anything is read); 2 usage (no path, a bad option value).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from powernode.core.manifest import (
    DEFAULT_OWNER,
    ManifestCheck,
    check_manifest_file,
    schema_text,
)
from powernode.errors import ConfigError, Problem

MANIFEST_NAME = "manifest.yaml"

PathsArg = Annotated[
    list[Path],
    typer.Argument(
        help="Module repo directories (holding manifest.yaml) or manifest files.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON list of results to stdout.")]
OwnerOpt = Annotated[
    str,
    typer.Option(
        "--default-owner",
        help="Owner given to legacy dependency_spec entries (<owner>/<name>@*).",
    ),
]


def _problem_dict(p: Problem) -> dict[str, object]:
    return {
        "file": p.file,
        "line": p.line,
        "column": p.column,
        "path": p.path,
        "message": p.message,
    }


def result_dict(check: ManifestCheck) -> dict[str, object]:
    """One entry of ``validate --json``."""
    return {
        "file": check.filename,
        "valid": check.ok,
        "name": check.manifest.name if check.manifest else None,
        "problems": [_problem_dict(p) for p in check.problems],
        "warnings": [_problem_dict(p) for p in check.warnings],
        "manifest": check.manifest.to_dict() if check.manifest else None,
        "registration_hints": dict(check.manifest.registration_hints) if check.manifest else {},
    }


def warning_line(p: Problem) -> str:
    where = f"{p.file}:{p.line}:{p.column}:" if p.line else f"{p.file}:"
    field = f" {p.path}:" if p.path else ""
    return f"{where} warning:{field} {p.message}"


def _resolve(paths: list[Path]) -> list[Path]:
    """The manifest file of every argument; a missing one exits 1 before anything is read."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            target = path / MANIFEST_NAME
            if not target.is_file():
                typer.echo(
                    f"error: {path}: directory has no {MANIFEST_NAME}; pass a module "
                    "repo directory or a manifest file",
                    err=True,
                )
                raise typer.Exit(1)
            out.append(target)
        elif path.exists():
            out.append(path)
        else:
            typer.echo(f"error: {path}: no such file or directory", err=True)
            raise typer.Exit(1)
    return out


def register(app: typer.Typer) -> None:
    """Add `validate` and `schema` to `powernode module`."""

    @app.command("validate")
    def validate_cmd(
        paths: PathsArg,
        as_json: JsonOpt = False,
        default_owner: OwnerOpt = DEFAULT_OWNER,
    ) -> None:
        """Check manifests offline; report every problem with file:line:column."""
        checks: list[ManifestCheck] = []
        try:
            for path in _resolve(paths):
                checks.append(check_manifest_file(path, default_owner=default_owner))
        except ConfigError as e:  # --default-owner's value: a usage error
            raise typer.BadParameter(str(e), param_hint="--default-owner") from e
        if as_json:
            typer.echo(json.dumps([result_dict(c) for c in checks], indent=2))
        else:
            for check in checks:
                for w in check.warnings:
                    typer.echo(warning_line(w), err=True)
                for p in check.problems:
                    typer.echo(str(p), err=True)
                if check.manifest is not None:
                    typer.echo(
                        f"{check.filename}: valid manifest of module {check.manifest.name!r}"
                    )
                else:
                    n = len(check.problems)
                    typer.echo(f"{check.filename}: invalid: {n} problem{'s' * (n != 1)}", err=True)
        if not all(c.ok for c in checks):
            raise typer.Exit(1)

    @app.command("schema")
    def schema_cmd() -> None:
        """Print the manifest JSON Schema (draft 2020-12) for editors and CI."""
        typer.echo(schema_text(), nl=False)
