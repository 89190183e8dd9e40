"""``powernode module build``: a module repo → an artifact directory (docs/artifact.md).

The steps (docs/build.md): load and check the manifest; resolve the version
and SOURCE_DATE_EPOCH; install ``package_spec`` with mmdebstrap (cached, see
``build_packages``); lay ``rootfs/`` over it; keep what ``file_spec`` selects
minus ``mask``; write the composefs image, its objects, module.json, the SBOM
and the lists, atomically. Every input that could differ between two hosts
or two runs (owners, mtimes, xattrs, order) is normalised, so a rebuild of
the same inputs is byte-identical.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.publish.format import canonical_json
from powernode.supply import sbom as cdx
from powernode.toolchain.build import packages as build_packages
from powernode.toolchain.build import pywheels
from powernode.toolchain.build.entries import Entry, check_parents, merge, rootfs_entries
from powernode.toolchain.build.inputs import resolve_epoch, resolve_version
from powernode.toolchain.build.output import check_out, staged_dir, write_file
from powernode.toolchain.build.tree import FileContent, make_tree, read_host_file
from powernode.toolchain.localrepo import ROOTFS_NAME, ModuleRepo, load_repo
from powernode.toolchain.sbom import Package, make_sbom
from powernode.toolchain.selection import shipped_paths
from powernode.verity.composefs.writer import write_tree

log = logging.getLogger(__name__)

ARTIFACT_VERSION = 1


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote (``composefs_digest`` is "" for a dry run: no image)."""

    out: Path
    name: str
    version: str
    composefs_digest: str
    files: int
    objects: int
    object_bytes: int
    packages: tuple[str, ...]
    cached: bool
    dry_run: bool = False


def select_entries(entries: Sequence[Entry], repo: ModuleRepo) -> list[Entry]:
    """The entries ``file_spec`` selects minus ``mask``, with their parents and the root."""
    m = repo.manifest
    by_listed = {e.listed: e for e in entries}
    chosen = shipped_paths(by_listed, m.file_spec, m.mask)
    root = [by_listed["/"]] if "/" in by_listed else []
    return root + [by_listed[p] for p in chosen if p in by_listed]


def _lists(selected: Sequence[Entry], packages: Sequence[Package]) -> tuple[bytes, bytes]:
    files = "".join(f"{e.listed}\n" for e in selected if e.path != "/")
    pkgs = "".join(f"{p.pin}\n" for p in sorted(packages))
    return files.encode("utf-8", "surrogateescape"), pkgs.encode()


@dataclass(frozen=True)
class _Plan:
    """Everything resolved before anything is written."""

    repo: ModuleRepo
    version: str
    epoch: int
    selected: list[Entry]
    pkg_tree: build_packages.PackageTree | None

    @property
    def packages(self) -> tuple[Package, ...]:
        return self.pkg_tree.packages if self.pkg_tree else ()

    @property
    def cached(self) -> bool:
        return bool(self.pkg_tree and self.pkg_tree.cached)


def build_module(
    repo: Path,
    out: Path,
    *,
    version: str | None = None,
    source_date_epoch: int | None = None,
    packages: bool = True,
    mirror: str | None = None,
    cache_dir: Path | None = None,
    dry_run: bool = False,
    python_wheels: Sequence[Path] = (),
) -> BuildResult:
    """Build the module repo at ``repo`` into the artifact directory ``out`` (must not exist).

    ``packages=False`` ships rootfs/ only (no mmdebstrap): module.json then
    says ``"package_source": null`` and ``"packages": []``. A dry run writes
    manifest.json, file-list.txt and package-list.txt only; it uses a cached
    package tree when there is one and never runs mmdebstrap.
    ``python_wheels`` (and the repo's ``python-requirements.txt``) are installed
    into ``/usr/lib/python3/dist-packages`` between the packages and rootfs/
    (``pywheels``; not in a dry run).
    Raises ManifestError (file:line:column), ConfigError (version, epoch,
    out), SourceTreeError (the tree, mmdebstrap failing).
    """
    loaded = load_repo(repo)
    m = loaded.manifest
    ver = resolve_version(loaded.path, version)
    epoch = resolve_epoch(loaded.path, source_date_epoch)
    check_out(out)
    with contextlib.ExitStack() as stack:
        pkg_tree: build_packages.PackageTree | None = None
        if packages and m.package_spec:
            pkg_tree = stack.enter_context(
                build_packages.package_tree(
                    m.package_spec,
                    epoch=epoch,
                    mirror=mirror,
                    cache_dir=cache_dir,
                    build=not dry_run,
                )
            )
        overlay = rootfs_entries(loaded.path / ROOTFS_NAME, epoch=epoch)
        base: list[Entry] = list(pkg_tree.entries) if pkg_tree else []
        if not dry_run and pywheels.wanted(loaded.path, python_wheels):
            pywheels.check_python({e.path for e in base})
            py_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pn-py.")))
            pywheels.install(loaded.path, python_wheels, py_root / "root", epoch=epoch)
            base = merge(base, rootfs_entries(py_root / "root", epoch=epoch))
        merged = merge(base, overlay)
        check_parents(merged)
        plan = _Plan(loaded, ver, epoch, select_entries(merged, loaded), pkg_tree)
        with staged_dir(out) as tmp:
            file_list, package_list = _lists(plan.selected, plan.packages)
            write_file(tmp / "manifest.json", m.to_json())
            write_file(tmp / "file-list.txt", file_list)
            write_file(tmp / "package-list.txt", package_list)
            if dry_run:
                result = BuildResult(
                    out=out,
                    name=m.name,
                    version=ver,
                    composefs_digest="",
                    files=_count(plan.selected),
                    objects=0,
                    object_bytes=0,
                    packages=_pins(plan.packages),
                    cached=plan.cached,
                    dry_run=True,
                )
            else:
                result = _write_image(tmp, out, plan)
    log.info("built %s %s into %s: %s", m.name, ver, out, result.composefs_digest or "dry run")
    return result


def _licenses(
    pkg_tree: build_packages.PackageTree | None, packages: Sequence[Package]
) -> dict[str, tuple[str, ...]]:
    """Each package's licenses from its machine-readable /usr/share/doc/<name>/copyright."""
    texts: dict[str, bytes] = {}
    if pkg_tree is None or pkg_tree.tar is None:
        return {}
    for p in packages:
        member = pkg_tree.members.get(f"/usr/share/doc/{p.name}/copyright")
        if member is None or member.size > cdx.MAX_COPYRIGHT:
            continue  # no copyright file (docs excluded, or a symlinked doc dir)
        stream = pkg_tree.tar.extractfile(member)
        if stream is not None:
            with stream:
                texts[p.name] = stream.read(cdx.MAX_COPYRIGHT + 1)
    return cdx.copyright_texts(texts)


def _count(selected: Sequence[Entry]) -> int:
    return sum(1 for e in selected if not e.is_dir)


def _pins(packages: Sequence[Package]) -> tuple[str, ...]:
    return tuple(p.pin for p in sorted(packages))


def _write_image(tmp: Path, out: Path, plan: _Plan) -> BuildResult:
    m = plan.repo.manifest
    pkg_tree = plan.pkg_tree
    stage = tmp / ".stage"  # package file contents extracted for the object store
    stage.mkdir()

    def read(entry: Entry) -> FileContent:
        if entry.origin == "rootfs" or pkg_tree is None:
            return read_host_file(entry)
        return pkg_tree.read(entry, stage)

    tree, shipped = make_tree(
        plan.selected, read, allow_devices=m.allow_devices, allow_setuid=m.allow_setuid
    )
    image = write_tree(tree, tmp / "image.cfs", digest_store=tmp / "objects")
    shutil.rmtree(stage)
    (tmp / "objects").mkdir(exist_ok=True)  # the layout always has objects/, even empty
    digest = f"sha256:{image.digest}"
    files = _count(plan.selected)
    objects = len(image.objects)
    object_bytes = sum(o.size for o in image.objects)
    config: dict[str, object] = {
        "artifact_version": ARTIFACT_VERSION,
        "name": m.name,
        "version": plan.version,
        "manifest": m.to_dict(),
        "composefs_digest": digest,
        "files": files,
        "objects": objects,
        "object_bytes": object_bytes,
        "source_date_epoch": plan.epoch,
        "packages": list(_pins(plan.packages)),
        "package_source": pkg_tree.source if pkg_tree else None,
    }
    write_file(tmp / "module.json", canonical_json(config))
    sbom = make_sbom(
        name=m.name,
        version=plan.version,
        composefs_digest=digest,
        source_date_epoch=plan.epoch,
        packages=plan.packages,
        files=shipped,
        distro=pkg_tree.source["suite"] if pkg_tree else None,
        licenses=_licenses(pkg_tree, plan.packages),
    )
    write_file(tmp / "sbom.cdx.json", sbom)
    return BuildResult(
        out=out,
        name=m.name,
        version=plan.version,
        composefs_digest=digest,
        files=files,
        objects=objects,
        object_bytes=object_bytes,
        packages=_pins(plan.packages),
        cached=plan.cached,
    )
