"""The package tree: ``package_spec`` installed by mmdebstrap, as a cached tar file.

mmdebstrap (Debian's package) writes the installed tree as a tar file
(``TARGET`` ending in ``.tar``), which keeps owners, modes and device nodes
without needing them on the host's filesystem, so the same code serves a
root and an unprivileged (unshare) build. The tar is cached under
``cache_dir/<key>/rootfs.tar``, the key a SHA-256 of everything that decides
its content: suite, apt source lines, sorted package_spec, architecture,
variant and base set. The tar is then read like untrusted input: names with
``..`` or a leading ``/`` are refused, member count is bounded, and only the
members a module ships are ever read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import CommandError, ConfigError, SourceTreeError
from powernode.run import run
from powernode.toolchain.build_dpkg import packages_from_status
from powernode.toolchain.build_entries import MAX_ENTRIES, Entry
from powernode.toolchain.build_sources import AptSources, read_sources
from powernode.toolchain.build_tree import FileContent, hash_stream
from powernode.toolchain.sbom import Package

log = logging.getLogger(__name__)

# FACTS.md "mmdebstrap": the custom variant with this base set is the smallest tree in
# which maintainer scripts run (a shell, coreutils, users and groups); 12 s vs 17 s for
# minbase. Everything else comes from package_spec and its dependencies.
VARIANT = "custom"
BASE = ("base-files", "base-passwd", "dash", "coreutils", "diffutils", "libc-bin", "sed", "grep")
MMDEBSTRAP_TIMEOUT = 1800.0
_PKG_RE = re.compile(r"[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:-]+)?")
_TYPES = {
    tarfile.REGTYPE: stat.S_IFREG,
    tarfile.AREGTYPE: stat.S_IFREG,
    tarfile.LNKTYPE: stat.S_IFREG,  # a hard link ships as its own file (like mkcomposefs)
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
_XATTR_PAX = "SCHILY.xattr."


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/powernode/build``, else ``~/.cache/powernode/build``."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "powernode" / "build"


@dataclass
class PackageTree:
    """The installed tree's entries and packages; ``read`` extracts a member's content."""

    entries: list[Entry]
    packages: tuple[Package, ...]
    source: dict[str, str]  # module.json "package_source"
    cached: bool
    tar: tarfile.TarFile | None = None
    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    staged: int = 0

    def read(self, entry: Entry, stage: Path) -> FileContent:
        """Hash a member's content; external content is written to a file under ``stage``."""
        member = self.members.get(entry.path)
        if self.tar is None or member is None:
            raise SourceTreeError(f"{entry.where}: not in the package tree")
        stream = self.tar.extractfile(member)
        if stream is None:
            raise SourceTreeError(f"{entry.where}: has no content in the package tar")
        with stream:
            if entry.size <= 64:
                return hash_stream(stream, entry.size, entry.where, None)
            self.staged += 1
            dest = stage / f"{self.staged:08d}"
            with dest.open("xb") as sink:
                content = hash_stream(stream, entry.size, entry.where, sink)
        return FileContent(content.sha256, None, content.verity, dest)


def _requested(spec: str, arch: str) -> Package:
    name, _, version = spec.partition("=")
    return Package(name, version, arch)


def check_spec(spec: Sequence[str]) -> list[str]:
    """package_spec entries as apt arguments; anything that is not a package name is refused."""
    for s in spec:
        if _PKG_RE.fullmatch(s) is None:
            raise ConfigError(
                f"package_spec entry {s!r} is not a Debian package name (optionally =version)"
            )
    return sorted(set(spec))


def cache_key(sources: AptSources, spec: Sequence[str], arch: str) -> str:
    doc = {
        "suite": sources.suite,
        "lines": list(sources.lines),
        "packages": sorted(spec),
        "arch": arch,
        "variant": VARIANT,
        "base": list(BASE),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def host_arch() -> str:
    return run(["dpkg", "--print-architecture"], timeout=30).stdout.decode().strip()


@contextlib.contextmanager
def package_tree(
    spec: Sequence[str],
    *,
    epoch: int,
    mirror: str | None = None,
    cache_dir: Path | None = None,
    build: bool = True,
    sources_root: Path = Path("/"),
    arch: str | None = None,
) -> Iterator[PackageTree]:
    """The package tree of ``spec`` (from the cache, else installed by mmdebstrap).

    ``build=False`` (dry run) never runs mmdebstrap: without a cached tree
    the packages are the requested names and the tree is empty.
    """
    pkgs = check_spec(spec)
    sources = read_sources(sources_root, mirror)
    arch = arch or host_arch()
    key = cache_key(sources, pkgs, arch)
    cache = (cache_dir or default_cache_dir()) / key
    tar_path = cache / "rootfs.tar"
    source = {"tool": "mmdebstrap", "suite": sources.suite, "arch": arch, "variant": VARIANT}
    cached = tar_path.is_file()
    if not cached:
        if not build:
            requested = tuple(_requested(s, arch) for s in pkgs)
            yield PackageTree([], requested, source, False)
            return
        _mmdebstrap(pkgs, sources, arch, cache, tar_path)
    log.info("package tree %s (%s)", tar_path, "cached" if cached else "built")
    try:
        tar = tarfile.open(tar_path, "r:")  # noqa: SIM115 - closed below
    except (OSError, tarfile.TarError) as e:
        raise SourceTreeError(
            f"{tar_path}: cannot read the cached package tree ({e}); remove {cache} and build again"
        ) from e
    with tar:
        entries, members = read_members(tar, str(tar_path), epoch)
        packages = packages_from_status(tar, members.get("/var/lib/dpkg/status"), str(tar_path))
        yield PackageTree(entries, packages, source, cached, tar, members)


def _mmdebstrap(
    pkgs: list[str], sources: AptSources, arch: str, cache: Path, tar_path: Path
) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".rootfs.", suffix=".tar")
    os.close(fd)
    argv = [
        "mmdebstrap",
        f"--variant={VARIANT}",
        f"--architectures={arch}",
        "--include=" + ",".join([*BASE, *pkgs]),
        sources.suite,
        tmp,
        *sources.lines,
    ]
    try:
        run(argv, timeout=MMDEBSTRAP_TIMEOUT)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, tar_path)
    except CommandError as e:
        raise explain_failure(e, pkgs) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with contextlib.suppress(OSError):  # empty after a failure: leave no trace
            cache.rmdir()


def explain_failure(e: CommandError, pkgs: Sequence[str]) -> SourceTreeError:
    """mmdebstrap's apt error, named: which package_spec entry could not be installed."""
    # apt's messages (apt-pkg/cacheset.cc): "Unable to locate package X", "Package 'X' has
    # no installation candidate", "Version 'V' for 'X' was not found"
    missing = re.findall(
        r"(?:Unable to locate package |Package '|Version '[^']*' for ')([a-z0-9][a-z0-9+.-]*)",
        e.stderr,
    )
    named = sorted({m for m in missing if m in {p.split("=")[0] for p in pkgs}})
    if named:
        return SourceTreeError(
            f"mmdebstrap could not install package_spec {', '.join(named)}: no such package "
            "in the configured apt sources; fix the name in manifest.yaml (apt-cache search "
            "NAME) or pass --mirror"
        )
    tail = "\n".join(e.stderr.strip().splitlines()[-5:])
    return SourceTreeError(
        f"mmdebstrap failed ({e.returncode}) installing {', '.join(pkgs)}:\n{tail}"
    )


def _name(member: tarfile.TarInfo, where: str) -> str:
    raw = member.name
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if raw.startswith("/") or ".." in parts:
        raise SourceTreeError(
            f"{where}: member {raw!r} escapes the tree root ('..' or absolute); refusing it"
        )
    return "/" + "/".join(parts)


def read_members(
    tar: tarfile.TarFile, where: str, epoch: int, *, limit: int = MAX_ENTRIES
) -> tuple[list[Entry], dict[str, tarfile.TarInfo]]:
    """The tar's members as entries (mtimes clamped to ``epoch``); content members by path."""
    entries: dict[str, Entry] = {}
    members: dict[str, tarfile.TarInfo] = {}
    for n, member in enumerate(tar):
        if n >= limit:
            raise SourceTreeError(f"{where}: more than {limit} members; refusing it")
        path = _name(member, where)
        kind = _TYPES.get(member.type)
        if kind is None:
            raise SourceTreeError(f"{where}: member {member.name!r} has unknown type")
        size = member.size
        if member.type == tarfile.LNKTYPE:
            target = members.get(_name(tarfile.TarInfo(member.linkname), where))
            if target is None:
                raise SourceTreeError(f"{where}: hard link {member.name!r} to a missing member")
            size = target.size
        xattrs = tuple(
            sorted(
                (k[len(_XATTR_PAX) :].encode(), v.encode("utf-8", "surrogateescape"))
                for k, v in member.pax_headers.items()
                if k.startswith(_XATTR_PAX)
            )
        )
        entries[path] = Entry(
            path=path,
            mode=kind | stat.S_IMODE(member.mode),
            uid=member.uid,
            gid=member.gid,
            mtime=min(int(member.mtime), epoch),
            size=size if kind == stat.S_IFREG else 0,
            origin="packages",
            where=f"{where}:{path}",
            target=member.linkname.encode("utf-8", "surrogateescape") if member.issym() else None,
            rdev=os.makedev(member.devmajor, member.devminor) if member.isdev() else 0,
            xattrs=xattrs,
        )
        if kind == stat.S_IFREG:
            members[path] = member
    return [entries[p] for p in sorted(entries)], members
