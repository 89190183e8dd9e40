"""`powernode module build PATH`: a module repo → an artifact directory (docs/build.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from powernode.errors import ConfigError, ManifestError, PowernodeError
from powernode.toolchain.build import BuildResult, build_module
from powernode.toolchain.localrepo import load_repo


def _default_out(repo: Path, version: str | None) -> Path:
    """``<repo>/dist/<name>-<version>`` (the manifest is read again by the build)."""
    name = load_repo(repo).name
    return repo / "dist" / (f"{name}-{version}" if version else name)


def result_dict(r: BuildResult) -> dict[str, object]:
    doc = dataclasses.asdict(r)
    doc["out"] = str(r.out)
    doc["packages"] = list(r.packages)
    return doc


def _summary(r: BuildResult) -> str:
    if r.dry_run:
        return (
            f"dry run: {r.name} {r.version}: {r.files} files, {len(r.packages)} packages "
            f"listed in {r.out}"
        )
    cache = " (package tree from the cache)" if r.cached else ""
    return (
        f"built {r.name} {r.version} into {r.out}{cache}\n"
        f"  composefs digest {r.composefs_digest}\n"
        f"  {r.files} files, {r.objects} objects ({r.object_bytes} bytes), "
        f"{len(r.packages)} packages"
    )


def register(app: typer.Typer) -> None:
    """Add `build` to `powernode module`."""

    @app.command("build")
    def build_cmd(  # noqa: PLR0917 - typer maps parameters to options
        path: Annotated[Path, typer.Argument(help="The module repo (holding manifest.yaml).")],
        out: Annotated[
            Path | None,
            typer.Option("--out", help="Artifact directory to create [default: PATH/dist/NAME-V]."),
        ] = None,
        version: Annotated[
            str | None, typer.Option("--version", help="Module version [default: git describe].")
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run", help="Write manifest.json, file-list.txt, package-list.txt only."
            ),
        ] = False,
        no_packages: Annotated[
            bool, typer.Option("--no-packages", help="Ship rootfs/ only; run no mmdebstrap.")
        ] = False,
        mirror: Annotated[
            str | None, typer.Option("--mirror", help="Debian mirror URL [default: apt's].")
        ] = None,
        cache_dir: Annotated[
            Path | None,
            typer.Option("--cache-dir", help="Package tree cache [~/.cache/powernode/build]."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        python_wheel: Annotated[
            list[Path] | None,
            typer.Option(
                "--python-wheel",
                help="A local wheel to install into /usr/lib/python3/dist-packages (repeatable).",
            ),
        ] = None,
    ) -> None:
        """Build an artifact: packages + rootfs/, filtered by file_spec/mask, reproducibly."""
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        try:
            if not path.is_dir():
                raise ConfigError(f"{path}: not a directory; pass a module repo")
            target = out if out is not None else _default_out(path, version)
            result = build_module(
                path,
                target,
                version=version,
                packages=not no_packages,
                mirror=mirror,
                cache_dir=cache_dir,
                dry_run=dry_run,
                python_wheels=tuple(python_wheel or ()),
            )
        except ManifestError as e:
            for p in e.problems:
                err.print(str(p), markup=False)
            raise typer.Exit(1) from e
        except PowernodeError as e:
            err.print(f"error: {e}", markup=False)
            raise typer.Exit(1) from e
        if as_json:
            typer.echo(json.dumps(result_dict(result), indent=2))
            return
        typer.echo(_summary(result))
        if dry_run:
            typer.echo((result.out / "file-list.txt").read_text(), nl=False)
            typer.echo((result.out / "package-list.txt").read_text(), nl=False)
