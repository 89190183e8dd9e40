"""Debian packages as build inputs: resolved by apt, downloaded once, read without installing.

Every input of an image is a .deb from the host's apt sources (no other
download): ``apt-cache show`` gives the candidate's version and the SHA-256
the signed Release/Packages files vouch for, ``apt-get download`` fetches it
into the shared .deb cache (``~/.cache/powernode/build/debs``, the one the
module builds use), and a cached file is reused only while its SHA-256 still
equals that. Members are read from ``dpkg-deb --fsys-tarfile``'s stream.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import CommandError, ConfigError, DataError
from powernode.run import run

MAX_MEMBERS = 50_000


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    arch: str
    sha256: str
    path: Path

    def manifest(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "sha256": self.sha256,
            "file": self.path.name,
        }


def _show(spec: str) -> dict[str, str]:
    try:
        out = run(["apt-cache", "show", "--no-all-versions", spec]).stdout.decode()
    except CommandError as e:
        raise ConfigError(f"package {spec}: not known to apt ({e}); run apt-get update") from e
    fields: dict[str, str] = {}
    for line in out.splitlines():
        if not line or line[0].isspace():
            if not line and fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key, value.strip())
    for key in ("Package", "Version", "Architecture", "SHA256"):
        if key not in fields:
            raise DataError(f"apt-cache show {spec}: no {key} field")
    return fields


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def newest_name(pattern: str) -> str:
    """The package name matching ``pattern`` (a full-match regex) that sorts highest."""
    prefix = re.split(r"[\\\[(.*+?]", pattern, maxsplit=1)[0]
    names = run(["apt-cache", "pkgnames", prefix]).stdout.decode().split()
    found = sorted((n for n in names if re.fullmatch(pattern, n)), key=_natural)
    if not found:
        raise ConfigError(f"no package matches {pattern!r} in the apt sources; run apt-get update")
    return found[-1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, arch: str, debs_dir: Path) -> Deb:
    """The candidate version of ``name`` for ``arch``, from the cache or ``apt-get download``."""
    fields = _show(f"{name}:{arch}")
    version, sha = fields["Version"], fields["SHA256"]
    file = debs_dir / f"{name}_{version.replace(':', '%3a')}_{fields['Architecture']}.deb"
    if not (file.is_file() and sha256_file(file) == sha):
        debs_dir.mkdir(parents=True, exist_ok=True)
        run(["apt-get", "download", "-q", f"{name}:{arch}={version}"], cwd=debs_dir)
        if not file.is_file():
            raise DataError(f"apt-get download {name}={version}: no {file.name} in {debs_dir}")
        got = sha256_file(file)
        if got != sha:
            file.unlink()
            raise DataError(f"{file.name}: sha256 {got}, but the apt index says {sha}")
    return Deb(name, version, fields["Architecture"], sha, file)


def read_members(deb: Deb, want: Callable[[str], bool]) -> dict[str, tuple[int, bytes]]:
    """``{path: (mode, bytes-or-link-target)}`` of the data members ``want(path)`` accepts.

    Paths are relative, without ``./``; only regular files and symlinks are kept.
    """
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb.path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out: dict[str, tuple[int, bytes]] = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for n, m in enumerate(tar):
                if n > MAX_MEMBERS:
                    raise DataError(f"{deb.path.name}: more than {MAX_MEMBERS} members")
                path = m.name.removeprefix("./")
                if ".." in path.split("/") or path.startswith("/") or not want(path):
                    continue
                if m.issym():
                    out[path] = (0o120777, m.linkname.encode())
                elif m.isfile():
                    f = tar.extractfile(m)
                    assert f is not None
                    out[path] = (0o100000 | (m.mode & 0o7777), f.read())
    finally:
        proc.stdout.close()
        rc = proc.wait(timeout=120)
    if rc != 0:
        raise DataError(f"dpkg-deb --fsys-tarfile {deb.path}: exit status {rc}")
    return out


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output, for the build manifest."""
    try:
        res = run(argv)
    except CommandError as e:
        return f"unavailable ({e})"
    text = (res.stdout or res.stderr).decode(errors="replace").strip().splitlines()
    return text[0] if text else ""
