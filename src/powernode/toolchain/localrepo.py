"""A module repo on disk: ``manifest.yaml`` plus the ``rootfs/`` tree it ships."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from powernode.core.manifest import Manifest, load_manifest
from powernode.errors import Problem, SourceTreeError
from powernode.toolchain.selection import shipped_paths

MANIFEST_NAME = "manifest.yaml"
ROOTFS_NAME = "rootfs"
MAX_TREE_ENTRIES = 2_000_000


@dataclass(frozen=True)
class ModuleRepo:
    """A loaded module repo: its manifest, warnings, and every path under rootfs/."""

    path: Path
    manifest: Manifest
    warnings: tuple[Problem, ...]
    tree_paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.manifest.name

    def shipped(self) -> list[str]:
        """The paths the module's artifact would hold (rootfs/ only; packages come at build)."""
        return shipped_paths(self.tree_paths, self.manifest.file_spec, self.manifest.mask)


def manifest_path(path: Path) -> Path:
    """``path`` itself when it is a file, else the repo's manifest.yaml."""
    return path / MANIFEST_NAME if path.is_dir() else path


def list_tree(root: Path, *, limit: int = MAX_TREE_ENTRIES) -> list[str]:
    """Every path under ``root`` as an artifact path; directories end with "/".

    Symlinks are listed, never followed, so a link loop or a link pointing
    out of the tree cannot make the walk escape or spin.
    """
    if not root.is_dir():
        return []
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = os.path.relpath(dirpath, root)
        prefix = "/" if rel == "." else "/" + rel.replace(os.sep, "/") + "/"
        dirnames.sort()
        for d in dirnames:
            full = os.path.join(dirpath, d)
            out.append(prefix + d + ("" if os.path.islink(full) else "/"))
        out.extend(prefix + f for f in sorted(filenames))
        if len(out) > limit:
            raise SourceTreeError(f"{root}: more than {limit} entries; refusing to list")
    return sorted(out)


def load_repo(path: Path, *, default_owner: str = "powernode") -> ModuleRepo:
    """Load the module repo at ``path`` (a directory or its manifest file)."""
    mpath = manifest_path(path)
    loaded = load_manifest(mpath, default_owner=default_owner)
    repo_dir = mpath.parent
    return ModuleRepo(
        path=repo_dir,
        manifest=loaded.manifest,
        warnings=tuple(loaded.warnings),
        tree_paths=tuple(list_tree(repo_dir / ROOTFS_NAME)),
    )
