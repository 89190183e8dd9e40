"""The package tree: ``package_spec`` installed by mmdebstrap, as a cached tar file.

mmdebstrap (Debian's package) writes the installed tree as a tar file
(``TARGET`` ending in ``.tar``), which keeps owners, modes and device nodes
without needing them on the host's filesystem, so the same code serves a
root and an unprivileged (unshare) build. The tar is cached under
``cache_dir/<key>/rootfs.tar``, the key a SHA-256 of everything that decides
its content: suite, apt source lines, sorted package_spec, architecture,
variant and the epoch. The tar is then read like untrusted input: names with
``..`` or a leading ``/`` are refused, member count is bounded, and only the
members a module ships are ever read.

The variant is mmdebstrap's ``essential``: the ``Essential: yes`` set, which
Debian Policy §3.8 lets every maintainer script use without declaring it,
then ``package_spec`` and its dependencies installed by apt. The measurement
behind that choice is in docs/build.md ("Which base set"). The tree is
reproducible: ``SOURCE_DATE_EPOCH`` (the module's epoch, part of the cache
key) makes mmdebstrap clamp mtimes and drop its logs, and the host's
``/etc/resolv.conf`` and ``/etc/hostname``, which mmdebstrap copies in, are
removed. Downloaded ``.deb`` files are kept in ``cache_dir/debs`` (hard links
where the file system allows) so a rebuild downloads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import CommandError, ConfigError, SourceTreeError
from powernode.run import run
from powernode.toolchain.build.dpkg import packages_from_status
from powernode.toolchain.build.entries import MAX_ENTRIES, Entry
from powernode.toolchain.build.failure import explain_failure
from powernode.toolchain.build.sources import AptSources, read_sources
from powernode.toolchain.build.tree import FileContent, hash_stream
from powernode.toolchain.sbom import Package

log = logging.getLogger(__name__)

# docs/build.md "Which base set": custom + a hand-picked base failed real packages'
# maintainer scripts (usrmerge needs mountpoint, chrony needs chfn and PAM); minbase
# works but adds Priority: required (apt, ...) to every module's package list.
VARIANT = "essential"
# Host files mmdebstrap copies into the tree (man mmdebstrap, SOURCE_DATE_EPOCH): a build
# must not depend on the host it ran on.
HOST_FILES = ("/etc/resolv.conf", "/etc/hostname")
DEBS_DIR = "debs"
# mmdebstrap's own hook: bind-mounts local .deb paths and file:// mirrors into the chroot,
# where apt's chrooted dpkg must read them (without it: "cannot access archive")
FILE_HOOKS = Path("/usr/share/mmdebstrap/hooks/file-mirror-automount")
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


def cache_key(sources: AptSources, spec: Sequence[str], arch: str, epoch: int) -> str:
    doc = {
        "suite": sources.suite,
        "lines": list(sources.lines),
        "packages": sorted(spec),
        "arch": arch,
        "variant": VARIANT,
        "epoch": epoch,
        "drop": list(HOST_FILES),
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
    root = cache_dir or default_cache_dir()
    key = cache_key(sources, pkgs, arch, epoch)
    cache = root / key
    tar_path = cache / "rootfs.tar"
    source = {"tool": "mmdebstrap", "suite": sources.suite, "arch": arch, "variant": VARIANT}
    cached = tar_path.is_file()
    if not cached:
        if not build:
            requested = tuple(_requested(s, arch) for s in pkgs)
            yield PackageTree([], requested, source, False)
            return
        install_tree(pkgs, sources, arch, tar_path, epoch=epoch, debs=root / DEBS_DIR)
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


def mmdebstrap_argv(
    includes: Sequence[str], sources: AptSources, arch: str, target: Path, debs: Path
) -> list[str]:
    """mmdebstrap's arguments: the variant, the packages, the .deb cache and host-file hooks."""
    d = shlex.quote(str(debs))
    archives = '"$1"/var/cache/apt/archives'
    local = any("/" in i for i in includes) or any(" file:/" in x for x in sources.lines)
    hooks = [f"--hook-dir={FILE_HOOKS}"] if local else []
    return [
        "mmdebstrap",
        f"--variant={VARIANT}",
        f"--architectures={arch}",
        "--include=" + ",".join(includes),
        *hooks,
        # keep what was downloaded (man mmdebstrap, "sync-in"/"sync-out" example); hard
        # links where possible, else copies. The cleanup step still empties the tree's
        # archives, so no .deb ends up in the tar.
        "--skip=essential/unlink",
        f"--setup-hook=mkdir -p {d} {archives} && "
        f"{{ cp -al {d}/. {archives}/ 2>/dev/null || cp -a {d}/. {archives}/; }}",
        f'--customize-hook=for f in {archives}/*.deb; do [ -e "$f" ] || continue; '
        f'[ -e {d}/"${{f##*/}}" ] || ln "$f" {d}/ 2>/dev/null || cp "$f" {d}/; done',
        "--customize-hook=rm -f " + " ".join(f'"$1"{p}' for p in HOST_FILES),
        sources.suite,
        str(target),
        *sources.lines,
    ]


def install_tree(
    includes: Sequence[str],
    sources: AptSources,
    arch: str,
    tar_path: Path,
    *,
    epoch: int,
    debs: Path,
) -> None:
    """Run mmdebstrap into ``tar_path`` atomically; on failure nothing is left behind.

    ``includes`` are apt arguments: package names, ``name=version``, or paths of
    local ``.deb`` files (mmdebstrap passes them to apt as they are).
    """
    cache = tar_path.parent
    cache.mkdir(parents=True, exist_ok=True)
    debs.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".rootfs.", suffix=".tar")
    os.close(fd)
    argv = mmdebstrap_argv(includes, sources, arch, Path(tmp), debs)
    try:
        run(
            argv,
            timeout=MMDEBSTRAP_TIMEOUT,
            env={"SOURCE_DATE_EPOCH": str(epoch)},
            merge_output=True,
        )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, tar_path)
    except CommandError as e:
        log.debug("mmdebstrap output:\n%s", e.stderr)
        raise explain_failure(e.returncode, e.stderr, includes) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with contextlib.suppress(OSError):  # empty after a failure: leave no trace
            cache.rmdir()


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
