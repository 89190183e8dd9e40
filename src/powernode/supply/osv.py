"""OSV-schema vulnerability records (https://ossf.github.io/osv-schema/) matched to Debian packages.

Records are read from a JSON file (one record, a list, or ``{"vulns": [...]}``),
JSON lines, a zip of JSON files (osv.dev's ``<Ecosystem>/all.zip``) or a
directory of JSON files. Only the fields matching needs are kept.

Matching (:class:`FeedIndex`): an index from package name to its affected
entries, so a module of N packages costs N dictionary lookups plus the
ranges of the few records that name each package. A package matches an
entry when the ecosystems agree (``Debian:12`` with the SBOM's
``distro=debian-12``; a bare ``Debian`` with any release) and its version is
in an ``ECOSYSTEM`` range or the ``versions`` list. Range events follow the
OSV spec's evaluation: walking the events in version order up to the
package's version, ``introduced`` opens, ``fixed`` closes, ``last_affected``
closes after its own version. Versions compare with dpkg's ordering
(python-debian's ``debian_support.Version``: epochs, ``~``, revisions).

Severity: ``database_specific.severity`` or ``affected[].ecosystem_specific.
severity`` / ``urgency`` when they name a level, else the highest CVSS v3
base score in ``severity[]``, else ``unknown``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final

from debian.debian_support import Version

from powernode.errors import DataError
from powernode.supply.cvss import CvssError, base_score, rating

LEVELS: Final = ("unknown", "none", "low", "medium", "high", "critical")
RANK: Final = {level: i for i, level in enumerate(LEVELS)}
DEBIAN_CODENAMES: Final = {
    "buster": "10",
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
}
MAX_FEED_BYTES = 1024 * 1024 * 1024
_NAMED_LEVELS: Final = {
    "critical": "critical",
    "high": "high",
    "important": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "unimportant": "low",
    "negligible": "low",
    "none": "none",
}


class FeedError(DataError, ValueError):
    """The feed cannot be read, or a record is not an OSV record."""


@dataclass(frozen=True)
class Affected:
    ecosystem: str  # "Debian:12"
    name: str
    events: tuple[tuple[str, str], ...]  # (kind, version) in the order given
    versions: frozenset[str]


@dataclass(frozen=True)
class Record:
    id: str
    modified: str
    aliases: tuple[str, ...]
    summary: str
    severity: str
    affected: tuple[Affected, ...]
    fixed: dict[str, str] = field(default_factory=dict, compare=False)  # name -> first fix


@dataclass(frozen=True, order=True)
class Pkg:
    name: str
    version: str
    distro: str | None = None  # the purl qualifier: "debian-12", "bookworm"
    source: str | None = None  # the source package, Debian's OSV records name those
    purl: str = ""


@dataclass(frozen=True)
class Match:
    record_id: str
    aliases: tuple[str, ...]
    package: str
    version: str
    purl: str
    severity: str
    fixed: str | None
    summary: str


@lru_cache(maxsize=65536)
def dpkg_version(v: str) -> Version:
    return Version(v)


def parse_record(doc: object) -> Record:
    if not isinstance(doc, dict):
        raise FeedError("an OSV record is a JSON object")
    rid = doc.get("id")
    if not isinstance(rid, str) or not rid:
        raise FeedError("an OSV record has no id")
    modified = doc.get("modified")
    if not isinstance(modified, str):
        raise FeedError(f"{rid}: no modified timestamp")
    affected: list[Affected] = []
    fixed: dict[str, str] = {}
    level: str | None = _level(doc.get("database_specific"))
    for i, a in enumerate(_list(doc.get("affected"))):
        if not isinstance(a, dict) or not isinstance(a.get("package"), dict):
            raise FeedError(f"{rid}: affected[{i}] has no package")
        pkg = a["package"]
        eco, name = pkg.get("ecosystem"), pkg.get("name")
        if not isinstance(eco, str) or not isinstance(name, str):
            raise FeedError(f"{rid}: affected[{i}].package needs ecosystem and name")
        level = level or _level(a.get("ecosystem_specific")) or _level(a.get("database_specific"))
        events: list[tuple[str, str]] = []
        for r in _list(a.get("ranges")):
            if not isinstance(r, dict) or r.get("type") != "ECOSYSTEM":
                continue  # GIT and SEMVER ranges say nothing about a Debian version
            for e in _list(r.get("events")):
                if isinstance(e, dict) and len(e) == 1:
                    ((kind, ver),) = e.items()
                    if kind in {"introduced", "fixed", "last_affected"} and isinstance(ver, str):
                        events.append((kind, ver))
                        if kind == "fixed":
                            fixed.setdefault(name, ver)
        versions = frozenset(v for v in _list(a.get("versions")) if isinstance(v, str))
        affected.append(Affected(eco, name, tuple(events), versions))
    if level is None:
        level = _cvss_level(doc.get("severity"))
    if doc.get("withdrawn"):
        affected, fixed = [], {}  # a withdrawn record affects nothing any more
    return Record(
        rid,
        modified,
        tuple(a for a in _list(doc.get("aliases")) if isinstance(a, str)),
        str(doc.get("summary") or doc.get("details") or "")[:500],
        level,
        tuple(affected),
        fixed,
    )


def _list(value: object) -> list[object]:
    """``value`` if it is a list, else empty (a malformed optional field matches nothing)."""
    return value if isinstance(value, list) else []


def _level(block: object) -> str | None:
    if not isinstance(block, dict):
        return None
    for key in ("severity", "urgency"):
        v = block.get(key)
        if isinstance(v, str) and v.lower().rstrip("*") in _NAMED_LEVELS:
            return _NAMED_LEVELS[v.lower().rstrip("*")]
    return None


def _cvss_level(severity: object) -> str:
    best = -1.0
    for s in severity if isinstance(severity, list) else []:
        if isinstance(s, dict) and s.get("type") == "CVSS_V3" and isinstance(s.get("score"), str):
            try:
                best = max(best, base_score(s["score"]))
            except CvssError:
                continue
    return rating(best) if best >= 0 else "unknown"


def read_documents(data: bytes, *, name: str = "<feed>") -> Iterator[object]:
    """The JSON documents in ``data``: a zip of JSON files, JSON, or JSON lines."""
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"{name}: the feed is over {MAX_FEED_BYTES} bytes")
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    if info.filename.endswith(".json") and not info.is_dir():
                        yield from _json_docs(z.read(info), f"{name}!{info.filename}")
        except zipfile.BadZipFile as e:
            raise FeedError(f"{name}: not a readable zip: {e}") from None
        return
    yield from _json_docs(data, name)


def _json_docs(data: bytes, name: str) -> Iterator[object]:
    try:
        doc = json.loads(data)
    except json.JSONDecodeError:
        lines = [ln for ln in data.splitlines() if ln.strip()]
        try:
            docs = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError as e:
            raise FeedError(f"{name}: neither JSON nor JSON lines: {e}") from None
        yield from docs
        return
    except UnicodeDecodeError as e:
        raise FeedError(f"{name}: not UTF-8: {e}") from None
    if isinstance(doc, dict) and isinstance(doc.get("vulns"), list):
        yield from doc["vulns"]
    elif isinstance(doc, list):
        yield from doc
    else:
        yield doc


def read_path(path: Path) -> list[Record]:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    out: list[Record] = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as e:
            raise FeedError(f"{f}: cannot read: {e.strerror}") from None
        out.extend(parse_records(read_documents(data, name=str(f))))
    return out


def parse_records(docs: Iterable[object]) -> list[Record]:
    return [parse_record(d) for d in docs]


def release_of(ecosystem: str) -> tuple[str, str | None]:
    """("Debian", "12") for "Debian:12"; ("Debian", None) for "Debian"."""
    base, _, rel = ecosystem.partition(":")
    return base, (rel or None)


def distro_release(distro: str | None) -> str | None:
    """ "12" for "debian-12", "bookworm" or "debian-bookworm"; None when unknown."""
    if not distro:
        return None
    d = distro.lower().removeprefix("debian-").removeprefix("debian")
    d = d.strip("-")
    if d in DEBIAN_CODENAMES:
        return DEBIAN_CODENAMES[d]
    return d.split(".", 1)[0] or None


def affects(entry: Affected, version: str) -> bool:
    if version in entry.versions:
        return True
    if not entry.events:
        return False
    v = dpkg_version(version)
    ordered = sorted(
        entry.events,
        key=lambda e: (dpkg_version("0") if e[1] == "0" else dpkg_version(e[1]), e[0] != "fixed"),
    )
    state = False
    for kind, ev in ordered:
        evv = dpkg_version("0") if ev == "0" else dpkg_version(ev)
        if evv > v:
            break
        if kind == "introduced":
            state = True
        elif kind == "fixed" or (kind == "last_affected" and evv < v):
            state = False
    return state


class FeedIndex:
    """Records indexed by (package name); built once per feed, matched many times."""

    def __init__(self, records: Iterable[Record], ecosystem: str = "Debian") -> None:
        self.ecosystem = ecosystem
        self.records: dict[str, Record] = {}
        self.by_name: dict[str, list[tuple[Record, Affected]]] = {}
        for r in records:
            self.records[r.id] = r
            for a in r.affected:
                if release_of(a.ecosystem)[0] == ecosystem:
                    self.by_name.setdefault(a.name, []).append((r, a))

    def match(self, packages: Iterable[Pkg]) -> list[Match]:
        out: dict[tuple[str, str], Match] = {}
        for p in packages:
            rel = distro_release(p.distro)
            names = {p.name} | ({p.source} if p.source else set())
            for name in names:
                for rec, a in self.by_name.get(name, ()):
                    arel = release_of(a.ecosystem)[1]
                    if arel is not None and rel is not None and arel != rel:
                        continue
                    if (rec.id, p.name) in out or not affects(a, p.version):
                        continue
                    out[(rec.id, p.name)] = Match(
                        rec.id,
                        rec.aliases,
                        p.name,
                        p.version,
                        p.purl,
                        rec.severity,
                        rec.fixed.get(name),
                        rec.summary,
                    )
        return sorted(out.values(), key=lambda m: (-RANK[m.severity], m.record_id, m.package))


def record_json(rec: Record) -> dict[str, object]:
    """The kept fields as JSON (what the platform stores)."""
    return {
        "id": rec.id,
        "modified": rec.modified,
        "aliases": list(rec.aliases),
        "summary": rec.summary,
        "database_specific": {"severity": rec.severity},
        "affected": [
            {
                "package": {"ecosystem": a.ecosystem, "name": a.name},
                "ranges": [{"type": "ECOSYSTEM", "events": [{k: v} for k, v in a.events]}]
                if a.events
                else [],
                "versions": sorted(a.versions),
            }
            for a in rec.affected
        ],
    }
