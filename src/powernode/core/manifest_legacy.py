"""The older manifest form (seed 004) rewritten to the canonical one (seed 003).

The tutorial's manifests wrap identity fields in ``identity:``, split ``file_spec`` into
``{include, exclude, mask}`` and list dependencies as ``dependency_spec: [{name: x}]``.
Seed 003 (the authoring runbook) flattened identity, made ``file_spec`` a flat glob list
with a separate ``mask``, and wrote requirements as ``<owner>/<module>@<constraint>``;
it also moved ``category``, ``variety``, ``parent_module`` and the cosign regexps off
the manifest onto the platform's NodeModule row. We still read the old form so existing
repos keep building, warn once per moved field, and keep the platform-side fields as
registration hints. Giving one field in both forms is an error: neither silently wins.

Pure: works on the composed document and reports by source field path.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from powernode.core.yamlload import FieldPath, describe, show

IDENTITY_FIELDS = ("name", "display_name", "description", "license")
REGISTRATION_FIELDS = (
    "category",
    "variety",
    "parent_module",
    "cosign_identity_regexp",
    "cosign_issuer_regexp",
)
_FILE_SPEC_KEYS = ("include", "exclude", "mask")


@dataclass(frozen=True)
class Note:
    """A warning or problem at a source field path; ``key`` points at the key, not the value."""

    path: FieldPath
    message: str
    key: bool = False
    offset: int | None = None  # where inside the string value, when known


@dataclass
class Normalised:
    """The canonical document and how to find each canonical field in the source."""

    doc: dict[str, object]
    # canonical path → source path, for the fields that moved; longest prefix wins
    origin: dict[FieldPath, FieldPath] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)
    warnings: list[Note] = field(default_factory=list)
    problems: list[Note] = field(default_factory=list)

    def source(self, path: FieldPath) -> FieldPath:
        for i in range(len(path), -1, -1):
            if path[:i] in self.origin:
                return self.origin[path[:i]] + path[i:]
        return path


def suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"


def normalise(root: Mapping[str, object], default_owner: str) -> Normalised:
    """Rewrite the legacy parts of ``root``; a canonical document comes back unchanged."""
    out = Normalised(dict(root))
    if "identity" in root:
        _identity(root, out)
    if isinstance(root.get("file_spec"), dict):
        _file_spec(root, out)
    if "dependency_spec" in root:
        _dependency_spec(root, out, default_owner)
    return out


def _identity(root: Mapping[str, object], out: Normalised) -> None:
    ident = out.doc.pop("identity")
    if not isinstance(ident, dict):
        out.problems.append(
            Note(("identity",), f"must be a mapping of identity fields, not {describe(ident)}")
        )
        return
    for k, v in ident.items():
        if k in IDENTITY_FIELDS:
            if k in root:
                out.problems.append(
                    Note(
                        ("identity", k),
                        f"{k} is given both here and as top-level {k!r}; "
                        f"keep only the top-level {k!r}",
                        key=True,
                    )
                )
                continue
            out.doc[k] = v
            out.origin[(k,)] = ("identity", k)
            out.warnings.append(
                Note(
                    ("identity", k),
                    f"legacy form: write it as the top-level key {k!r}",
                    key=True,
                )
            )
        elif k in REGISTRATION_FIELDS:
            out.warnings.append(
                Note(
                    ("identity", k),
                    "not a manifest field: it moved to platform registration "
                    "(the NodeModule row); kept only as a registration hint",
                    key=True,
                )
            )
            if isinstance(v, str):
                out.hints[k] = v
            else:
                out.problems.append(Note(("identity", k), f"must be a string, not {describe(v)}"))
        else:
            known = [*IDENTITY_FIELDS, *REGISTRATION_FIELDS]
            out.problems.append(
                Note(("identity", k), f"unknown key {k!r}{suggest(k, known)}", key=True)
            )


def _file_spec(root: Mapping[str, object], out: Normalised) -> None:
    spec = out.doc.pop("file_spec")
    assert isinstance(spec, dict)
    for k in spec:
        if k not in _FILE_SPEC_KEYS:
            out.problems.append(
                Note(("file_spec", k), f"unknown key {k!r}{suggest(k, _FILE_SPEC_KEYS)}", key=True)
            )
    if "include" in spec:
        out.doc["file_spec"] = spec["include"]
        out.origin[("file_spec",)] = ("file_spec", "include")
        out.warnings.append(
            Note(
                ("file_spec", "include"),
                "legacy form: write its globs as the top-level list 'file_spec:'",
                key=True,
            )
        )
    masks: list[object] = []
    for k in ("exclude", "mask"):
        if k not in spec:
            continue
        if "mask" in root:
            out.problems.append(
                Note(
                    ("file_spec", k),
                    f"file_spec.{k} and the top-level 'mask' are both "
                    f"given; move the entries of file_spec.{k} into 'mask'",
                    key=True,
                )
            )
            continue
        entries = spec[k]
        if not isinstance(entries, list):
            out.problems.append(Note(("file_spec", k), f"must be a list, not {describe(entries)}"))
            continue
        out.origin.setdefault(("mask",), ("file_spec", k))
        for i, entry in enumerate(entries):
            out.origin[("mask", len(masks))] = ("file_spec", k, i)
            masks.append(entry)
        out.doc["mask"] = masks
        out.warnings.append(
            Note(
                ("file_spec", k),
                "legacy form: write its globs under the top-level 'mask:'",
                key=True,
            )
        )


def _dependency_spec(root: Mapping[str, object], out: Normalised, owner: str) -> None:
    spec = out.doc.pop("dependency_spec")
    deps = root.get("dependencies")
    if isinstance(deps, dict) and "requires" in deps:
        out.problems.append(
            Note(
                ("dependency_spec",),
                "dependency_spec and dependencies.requires are both "
                "given; move its entries into dependencies.requires",
                key=True,
            )
        )
        return
    if not isinstance(spec, list):
        out.problems.append(
            Note(
                ("dependency_spec",), f"must be a list of {{name: <module>}}, not {describe(spec)}"
            )
        )
        return
    requires: list[str] = []
    for i, item in enumerate(spec):
        if not isinstance(item, dict):
            out.problems.append(
                Note(
                    ("dependency_spec", i),
                    f"must be a mapping {{name: <module>}}, not {describe(item)}",
                )
            )
            continue
        for k in item:
            if k != "name":
                out.problems.append(
                    Note(
                        ("dependency_spec", i, k),
                        f"unknown key {k!r}; the legacy form has "
                        "only 'name' (write dependencies.requires for a version)",
                        key=True,
                    )
                )
        name = item.get("name")
        if not isinstance(name, str):
            what = "missing" if "name" not in item else f"must be a string, not {describe(name)}"
            out.problems.append(Note(("dependency_spec", i, "name"), f"name {what}"))
            continue
        out.origin[("dependencies", "requires", len(requires))] = ("dependency_spec", i, "name")
        requires.append(f"{owner}/{name}@*")
    if deps is None or isinstance(deps, dict):
        out.doc["dependencies"] = {**(deps or {}), "requires": requires}
        out.origin.setdefault(("dependencies", "requires"), ("dependency_spec",))
        if deps is None:
            out.origin[("dependencies",)] = ("dependency_spec",)
    shown = show(requires, 120)
    out.warnings.append(
        Note(
            ("dependency_spec",),
            "legacy form: write 'dependencies: requires:' with "
            f'"<owner>/<module>@<constraint>" entries; read as {shown}',
            key=True,
        )
    )
