"""Debian packages as build inputs: resolved by apt, downloaded once, read without installing.

Every input of an image is a .deb from the host's apt sources (no other
download): ``apt-cache show`` gives the candidate's version and the SHA-256
the signed Release/Packages files vouch for, ``apt-get download`` fetches it
into the shared .deb cache (``~/.cache/powernode/build/debs``, the one the
module builds use), and a cached file is reused only while its SHA-256 still
equals that. Members are read from ``dpkg-deb --fsys-tarfile``'s stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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


APT_STATE_PATHS = (
    Path("/var/lib/apt/lists"),
    Path("/etc/apt/sources.list.d"),
    Path("/etc/apt/sources.list"),
    Path("/etc/apt/preferences.d"),
)


def apt_index_state() -> str:
    """A key that changes whenever apt's package index or sources may have changed."""
    h = hashlib.sha256()
    for top in APT_STATE_PATHS:
        paths = sorted(top.iterdir()) if top.is_dir() else [top]
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class AptQueries:
    """apt-cache answers, remembered per index state in ``memo_dir`` (a rebuild asks apt nothing).

    apt-cache takes seconds per call on a busy machine; its answers only change
    when the index (``/var/lib/apt/lists``) or the sources change, which the
    memo's key covers.
    """

    def __init__(self, memo_dir: Path | None) -> None:
        self._file = memo_dir / f"apt-{apt_index_state()[:32]}.json" if memo_dir else None
        self._memo: dict[str, object] = {}
        if self._file is not None and self._file.is_file():
            with contextlib.suppress(ValueError, OSError):
                self._memo = json.loads(self._file.read_text())

    def _save(self) -> None:
        if self._file is None:
            return
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._memo, sort_keys=True))
        tmp.replace(self._file)

    def newest_name(self, pattern: str) -> str:
        """The package name matching ``pattern`` (a full-match regex) that sorts highest."""
        key = f"newest:{pattern}"
        if isinstance(found := self._memo.get(key), str):
            return found
        prefix = re.split(r"[\\\[(.*+?]", pattern, maxsplit=1)[0]
        names = run(["apt-cache", "pkgnames", prefix]).stdout.decode().split()
        matches = sorted((n for n in names if re.fullmatch(pattern, n)), key=_natural)
        if not matches:
            raise ConfigError(
                f"no package matches {pattern!r} in the apt sources; run apt-get update"
            )
        self._memo[key] = matches[-1]
        self._save()
        return matches[-1]

    def show(self, specs: list[str]) -> list[dict[str, str]]:
        """Package, Version, Architecture and SHA256 of each spec's candidate."""
        missing = [s for s in specs if f"show:{s}" not in self._memo]
        if missing:
            try:
                out = run(["apt-cache", "show", "--no-all-versions", *missing]).stdout.decode()
            except CommandError as e:
                raise ConfigError(
                    f"packages {missing}: not all known to apt ({e}); run apt-get update"
                ) from e
            stanzas = _stanzas(out)
            if len(stanzas) != len(missing):
                raise DataError(f"apt-cache show {missing}: {len(stanzas)} stanzas")
            for spec, fields in zip(missing, stanzas, strict=True):
                if spec.split(":")[0] != fields["Package"]:
                    raise DataError(f"apt-cache show {spec}: answered {fields['Package']}")
                self._memo[f"show:{spec}"] = fields
            self._save()
        return [dict(self._memo[f"show:{s}"]) for s in specs]  # type: ignore[call-overload]


def _stanzas(out: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in [*out.splitlines(), ""]:
        if not line:
            if fields:
                for key in ("Package", "Version", "Architecture", "SHA256"):
                    if key not in fields:
                        raise DataError(f"apt-cache show: a stanza without {key}")
                stanzas.append(
                    {k: fields[k] for k in ("Package", "Version", "Architecture", "SHA256")}
                )
                fields = {}
            continue
        if line[0].isspace():
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key, value.strip())
    return stanzas


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def newest_name(pattern: str, memo_dir: Path | None = None) -> str:
    return AptQueries(memo_dir).newest_name(pattern)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch_all(
    names: list[str], arch: str, debs_dir: Path, memo_dir: Path | None = None
) -> list[Deb]:
    """The candidate version of each name for ``arch``: from the cache or ``apt-get download``."""
    out = []
    for name, fields in zip(
        names, AptQueries(memo_dir).show([f"{n}:{arch}" for n in names]), strict=True
    ):
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
        out.append(Deb(name, version, fields["Architecture"], sha, file))
    return out


def fetch(name: str, arch: str, debs_dir: Path, memo_dir: Path | None = None) -> Deb:
    return fetch_all([name], arch, debs_dir, memo_dir)[0]


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
