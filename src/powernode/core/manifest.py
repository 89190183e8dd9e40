"""manifest.yaml: the module author's description of a module, read strictly.

Format (schema_version 1, seed 003 "Module Authoring Runbook"; legacy seed-004 form read
too, see manifest_legacy.py) and field reference: docs/manifest.md. The steps, each
reporting every problem it finds with file:line:column and field path:

1. YAML → values with positions (yamlload.py: limits, no aliases, no duplicate keys);
2. legacy form → canonical form (manifest_legacy.py), one warning per moved field;
3. JSON Schema (core/schema/manifest.schema.json, manifest_schema.py);
4. what a schema cannot say: glob syntax (core.globs), requirement syntax (core.semver),
   entries per list.

Pure: ``parse_manifest`` takes text; ``load_manifest`` only adds a bounded file read.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from powernode.core import manifest_legacy, manifest_schema
from powernode.core.manifest_legacy import Note
from powernode.core.yamlload import FieldPath, YamlDocument, compose, describe, format_path
from powernode.errors import ConfigError, DataError, GlobError, ManifestError, Problem

if TYPE_CHECKING:
    from powernode.core.semver import Requirement

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_OWNER = "powernode"
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
_LISTS: tuple[FieldPath, ...] = (
    ("package_spec",),
    ("file_spec",),
    ("mask",),
    ("protected_spec",),
    ("dependencies", "requires"),
    ("dependencies", "provides"),
)
_GLOB_LISTS = ("file_spec", "mask", "protected_spec")


@dataclass(frozen=True)
class ManifestLimits:
    """Bounds on an untrusted manifest (defaults fit every real manifest many times over)."""

    max_bytes: int = 256 * 1024
    max_depth: int = 16
    max_list_entries: int = 1000
    max_string_length: int = 4096
    max_nodes: int = 20_000


def _frozen(hints: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(hints))


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A valid manifest in canonical form; ``to_dict()`` is what manifest.json holds.

    ``registration_hints`` keeps the legacy ``identity`` fields that belong to the
    platform's NodeModule row (category, variety, parent_module, cosign_*). They are not
    part of the manifest, so ``to_dict`` leaves them out.
    """

    schema_version: int = SCHEMA_VERSION
    name: str
    display_name: str = ""
    description: str = ""
    license: str = ""
    package_spec: tuple[str, ...] = ()
    file_spec: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    protected_spec: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    allow_devices: bool = False
    allow_setuid: bool = False
    # Data migrations (agent/migration.py), each {id, since, script[, timeout_seconds]}.
    migrations: tuple[Mapping[str, object], ...] = field(default=(), hash=False)
    # Init actions (agent/initactions.py): name -> {script | unit+action, on, timeout_seconds}.
    init_actions: Mapping[str, object] = field(default_factory=dict, hash=False)
    # Instance variety: files whose ${instance.*}/${metadata.*} placeholders the agent
    # renders at attach time (agent/modules/render.py).
    templates: tuple[str, ...] = ()
    registration_hints: Mapping[str, str] = field(default_factory=lambda: _frozen({}), hash=False)

    def __post_init__(self) -> None:
        # Callers may pass lists or a dict; store tuples and a read-only mapping so the
        # value stays immutable and hashable.
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        if not isinstance(self.registration_hints, MappingProxyType):
            object.__setattr__(self, "registration_hints", _frozen(self.registration_hints))

    def requirements(self) -> tuple[Requirement, ...]:
        """``requires`` parsed (they were checked when the manifest was read)."""
        from powernode.core.semver import parse_requirement  # noqa: PLC0415

        return tuple(parse_requirement(r) for r in self.requires)

    def to_dict(self) -> dict[str, object]:
        """The canonical form, every field present, in schema order."""
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "license": self.license,
            "package_spec": list(self.package_spec),
            "file_spec": list(self.file_spec),
            "mask": list(self.mask),
            "protected_spec": list(self.protected_spec),
            "dependencies": {"requires": list(self.requires), "provides": list(self.provides)},
            "allow": {"devices": self.allow_devices, "setuid": self.allow_setuid},
            # only when declared: manifests without migrations keep their bytes
            **({"migrations": [dict(m) for m in self.migrations]} if self.migrations else {}),
            **({"init_actions": dict(self.init_actions)} if self.init_actions else {}),
            **({"templates": list(self.templates)} if self.templates else {}),
        }

    def to_json(self) -> bytes:
        """manifest.json bytes: ``to_dict()``, 2-space indent, trailing newline, stable."""
        return (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        *,
        source: str = "manifest.json",
        limits: ManifestLimits = ManifestLimits(),
    ) -> Manifest:
        """Read the canonical form (e.g. a manifest.json); raises ManifestError.

        The legacy form is not accepted here: it exists only in authored YAML.
        """
        notes = _value_limits(data, limits)
        if not notes:
            notes = _canonical_notes(data, limits, lambda _p: False)
        if notes:
            raise ManifestError(
                [Problem(source, 0, 0, format_path(n.path), n.message) for n in notes]
            )
        assert isinstance(data, Mapping)
        return _build(data, {})

    @classmethod
    def from_stored(cls, data: object, *, name: str) -> Manifest:
        """A manifest.json a catalog stored, read leniently under the module's ``name``.

        A version registered by hand may carry a partial manifest (only ``mask``,
        say); the platform checked its globs when it stored it. Missing or
        ill-typed fields read as empty; requirements are parsed later, by
        :meth:`requirements`.
        """
        doc: Mapping[str, object] = data if isinstance(data, Mapping) else {}
        return _build({**doc, "name": name}, {})


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest read from YAML and the warnings reading it gave (legacy fields)."""

    manifest: Manifest
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class ManifestCheck:
    """Everything ``powernode module validate`` reports about one file."""

    filename: str
    manifest: Manifest | None
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_manifest(
    text: str | bytes,
    *,
    filename: str,
    default_owner: str = DEFAULT_OWNER,
    limits: ManifestLimits = ManifestLimits(),
) -> ManifestCheck:
    """Read ``text`` and report every problem and warning; never raises for bad input."""
    if not _SLUG.match(default_owner):
        raise ConfigError(f"default owner {default_owner!r} is not a lowercase slug")
    doc, problems = compose(
        text,
        filename=filename,
        max_bytes=limits.max_bytes,
        max_depth=limits.max_depth,
        max_nodes=limits.max_nodes,
        max_string_length=limits.max_string_length,
    )
    if doc is None:
        return ManifestCheck(filename, None, tuple(sorted(problems)), ())
    if not isinstance(doc.value, dict):
        what = describe(doc.value)
        problems.append(doc.problem((), f"a manifest is a mapping (key: value lines), not {what}"))
        return ManifestCheck(filename, None, tuple(sorted(problems)), ())
    norm = manifest_legacy.normalise(doc.value, default_owner)
    problems += [
        doc.problem(n.path, n.message, key=n.key)
        for n in norm.problems
        if not _repeats(doc, n.path, n)
    ]
    warnings = [doc.problem(n.path, n.message, key=n.key) for n in norm.warnings]
    notes = _canonical_notes(norm.doc, limits, lambda p: norm.source(p) in doc.unquoted)
    problems += [_locate(doc, norm, n) for n in notes if not _repeats(doc, norm.source(n.path), n)]
    manifest = None if problems else _build(norm.doc, norm.hints)
    return ManifestCheck(filename, manifest, tuple(sorted(problems)), tuple(sorted(warnings)))


def check_manifest_file(
    path: Path,
    *,
    default_owner: str = DEFAULT_OWNER,
    limits: ManifestLimits = ManifestLimits(),
) -> ManifestCheck:
    """``check_manifest`` on a file, read with the size limit applied before reading."""
    filename = str(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limits.max_bytes:
                msg = f"file is {size} bytes; the limit is {limits.max_bytes}"
                return ManifestCheck(filename, None, (Problem(filename, 0, 0, "", msg),), ())
            data = f.read(limits.max_bytes + 1)  # +1: a growing or special file still trips
    except OSError as e:
        msg = f"cannot read the manifest: {e.strerror or e}"
        return ManifestCheck(filename, None, (Problem(filename, 0, 0, "", msg),), ())
    return check_manifest(data, filename=filename, default_owner=default_owner, limits=limits)


def parse_manifest(
    text: str | bytes,
    *,
    filename: str,
    default_owner: str = DEFAULT_OWNER,
    limits: ManifestLimits = ManifestLimits(),
) -> LoadedManifest:
    """The manifest in ``text``, or ManifestError listing every problem."""
    return _loaded(
        check_manifest(text, filename=filename, default_owner=default_owner, limits=limits)
    )


def load_manifest(
    path: Path,
    *,
    default_owner: str = DEFAULT_OWNER,
    limits: ManifestLimits = ManifestLimits(),
) -> LoadedManifest:
    """The manifest in the file ``path``, or ManifestError listing every problem."""
    return _loaded(check_manifest_file(path, default_owner=default_owner, limits=limits))


def _loaded(check: ManifestCheck) -> LoadedManifest:
    for w in check.warnings:
        logger.info("%s", w)
    if check.manifest is None:
        raise ManifestError(list(check.problems))
    return LoadedManifest(check.manifest, check.warnings)


def _repeats(doc: YamlDocument, source: FieldPath, note: Note) -> bool:
    """Whether ``note`` is about a value the YAML step already refused (and replaced)."""
    return doc.is_tainted(source[:-1] if note.key else source)


def _locate(doc: YamlDocument, norm: manifest_legacy.Normalised, note: Note) -> Problem:
    if note.offset is not None and not note.key:
        return doc.problem_at(norm.source(note.path), note.offset, note.message)
    return doc.problem(norm.source(note.path), note.message, key=note.key)


def _canonical_notes(
    doc: object, limits: ManifestLimits, unquoted: Callable[[FieldPath], bool]
) -> list[Note]:
    notes = manifest_schema.schema_notes(doc, unquoted)
    bad = {n.path for n in notes}
    if isinstance(doc, Mapping):
        notes += _semantic_notes(doc, limits, bad)
    return notes


def _entries(doc: Mapping[str, object], path: FieldPath) -> list[object] | None:
    value: object = doc
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value if isinstance(value, list) else None


def _semantic_notes(
    doc: Mapping[str, object], limits: ManifestLimits, bad: set[FieldPath]
) -> list[Note]:
    # Imported here: core.globs and core.semver are siblings that import nothing of ours.
    from powernode.core.globs import validate_pattern  # noqa: PLC0415
    from powernode.core.semver import parse_requirement  # noqa: PLC0415

    checks: dict[FieldPath, Callable[[str], object]] = {
        ("dependencies", "requires"): parse_requirement,
        **{(k,): validate_pattern for k in _GLOB_LISTS},
    }
    notes: list[Note] = []
    for path in _LISTS:
        entries = _entries(doc, path)
        if entries is None:
            continue
        if len(entries) > limits.max_list_entries:
            notes.append(
                Note(
                    path,
                    f"{len(entries)} entries; the limit is {limits.max_list_entries}",
                )
            )
            continue
        check = checks.get(path)
        for i, entry in enumerate(entries):
            if check is None or not isinstance(entry, str) or (*path, i) in bad:
                continue
            try:
                check(entry)
            except GlobError as e:
                notes.append(Note((*path, i), str(e), offset=e.offset))
            except DataError as e:  # VersionError
                notes.append(Note((*path, i), str(e)))
    return notes


def glob_problems(doc: Mapping[str, object], *, source: str) -> list[Problem]:
    """The glob lists (file_spec, mask, protected_spec) of a canonical document checked
    alone: for a caller holding a manifest as values (the platform's register), where the
    rest of the document is another layer's business. Column = offset in the pattern + 1.
    """
    from powernode.core.globs import validate_pattern  # noqa: PLC0415

    out: list[Problem] = []
    for key in _GLOB_LISTS:
        entries = _entries(doc, (key,))
        for i, entry in enumerate(entries or ()):
            if not isinstance(entry, str):
                continue
            try:
                validate_pattern(entry)
            except GlobError as e:
                column = 0 if e.offset is None else e.offset + 1
                out.append(Problem(source, 0, column, format_path((key, i)), str(e)))
    return out


def _value_limits(data: object, limits: ManifestLimits) -> list[Note]:
    """The YAML composer's limits, for a document that arrives as values (manifest.json)."""
    stack: list[tuple[FieldPath, object]] = [((), data)]
    nodes = 0
    while stack:
        path, value = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            return [Note((), f"more than {limits.max_nodes} values")]
        if len(path) > limits.max_depth:
            return [Note(path, f"nested deeper than {limits.max_depth} levels")]
        if isinstance(value, str) and len(value) > limits.max_string_length:
            return [
                Note(
                    path,
                    f"text of {len(value)} characters; the limit is {limits.max_string_length}",
                )
            ]
        if isinstance(value, Mapping):
            for k, v in value.items():
                if not isinstance(k, str):
                    return [Note(path, f"key {k!r} is not a string")]
                stack.append(((*path, k), v))
        elif isinstance(value, list | tuple):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
    return []


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def _mappings(value: object) -> tuple[dict[str, object], ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(dict(m) for m in value if isinstance(m, Mapping))


def _mapping(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def _build(doc: Mapping[str, object], hints: Mapping[str, str]) -> Manifest:
    """A Manifest from a document the schema accepted."""
    deps = doc.get("dependencies")
    allow = doc.get("allow")
    deps = deps if isinstance(deps, Mapping) else {}
    allow = allow if isinstance(allow, Mapping) else {}
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=str(doc["name"]),
        display_name=str(doc.get("display_name", "")),
        description=str(doc.get("description", "")),
        license=str(doc.get("license", "")),
        package_spec=_strings(doc.get("package_spec")),
        file_spec=_strings(doc.get("file_spec")),
        mask=_strings(doc.get("mask")),
        protected_spec=_strings(doc.get("protected_spec")),
        requires=_strings(deps.get("requires")),
        provides=_strings(deps.get("provides")),
        allow_devices=allow.get("devices") is True,
        allow_setuid=allow.get("setuid") is True,
        migrations=_mappings(doc.get("migrations")),
        init_actions=_mapping(doc.get("init_actions")),
        templates=_strings(doc.get("templates")),
        registration_hints=hints,
    )


def schema_text() -> str:
    """The manifest JSON Schema, as ``powernode module schema`` prints it."""
    return manifest_schema.schema_text()
