"""Compose local module repos the way the platform composes a template.

A template file is the local twin of a NodeTemplate's assignments: for each
module repo its version, category, variety, parent and an optional
``effective_priority`` override. Where no template file is given, category,
variety and parent come from the manifest's registration hints (the older
``identity:`` form carries them) and default to ``userland``/``subscription``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from powernode.core.composition import Composition
from powernode.core.plan import PlanEntry
from powernode.core.plan import plan as plan_template
from powernode.core.priority import SEEDED_CATEGORIES, Variety, effective_priority
from powernode.core.resolve import Resolution
from powernode.core.semver import Constraint, Requirement, Version
from powernode.core.yamlload import compose as compose_yaml
from powernode.errors import ConfigError, VersionError
from powernode.toolchain.localrepo import ModuleRepo, load_repo

LOCAL_OWNER = "powernode"
DEFAULT_VERSION = "1.0.0"
MAX_TEMPLATE_BYTES = 256 * 1024


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    version: str = DEFAULT_VERSION
    category: str | None = None
    variety: Variety | None = None
    parent: str | None = None
    effective_priority: int | None = Field(default=None, ge=0, le=100_000)


class _TemplateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    modules: list[_Entry] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True)
class Assignment:
    """One module repo assigned to a local template."""

    repo: ModuleRepo
    version: Version
    category: str
    category_position: int
    variety: Variety
    parent: str | None
    priority: int

    def entry(self) -> PlanEntry:
        """This assignment as the core plan offers it: one version, always chosen."""
        return PlanEntry(
            owner=LOCAL_OWNER,
            version=self.version,
            manifest=self.repo.manifest,
            files=tuple(self.repo.shipped()),
            requires=self.repo.manifest.requirements(),
            variety=self.variety,
            parent=self.parent,
            category_position=self.category_position,
        )


@dataclass(frozen=True)
class TemplatePlan:
    """What the template composes to: its assignments, resolution and composition."""

    name: str
    assignments: tuple[Assignment, ...]
    resolution: Resolution
    composition: Composition


def _category_position(slug: str, where: str) -> int:
    for cat in SEEDED_CATEGORIES:
        if cat.slug == slug:
            return cat.position
    known = ", ".join(c.slug for c in SEEDED_CATEGORIES)
    raise ConfigError(f"{where}: unknown category {slug!r} (known: {known})")


def _hint(hints: Mapping[str, str], key: str) -> str | None:
    value = hints.get(key)
    return str(value) if value is not None else None


def _assign(
    repo: ModuleRepo,
    *,
    version: str,
    category: str | None,
    variety: Variety | None,
    parent: str | None,
    override: int | None,
    where: str,
) -> Assignment:
    hints = repo.manifest.registration_hints
    cat = category or _hint(hints, "category") or "userland"
    var = variety or Variety(_hint(hints, "variety") or Variety.SUBSCRIPTION.value)
    par = parent or _hint(hints, "parent_module")
    try:
        ver = Version.parse(version)
    except VersionError as e:
        raise ConfigError(f"{where}: version: {e}") from e
    position = _category_position(cat, where)
    prio = effective_priority(position, var, override)
    return Assignment(repo, ver, cat, position, var, par, prio)


def load_template(path: Path) -> tuple[str, list[Assignment]]:
    """Read a template file; module paths are relative to the file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read template: {e.strerror}") from e
    # The same hardened reader as manifest.yaml: no aliases, no duplicate keys, bounded.
    doc, problems = compose_yaml(
        raw,
        filename=str(path),
        max_bytes=MAX_TEMPLATE_BYTES,
        max_depth=8,
        max_nodes=20_000,
        max_string_length=4096,
    )
    if doc is None or problems:
        raise ConfigError("\n".join(str(p) for p in problems) or f"{path}: empty template")
    try:
        tpl = _TemplateFile.model_validate(doc.value)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            line, column = doc.where(loc)
            field = ".".join(map(str, loc)) or "(document)"
            lines.append(f"{path}:{line}:{column}: {field}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from e
    out = []
    for i, entry in enumerate(tpl.modules):
        line, column = doc.where(("modules", i))
        where = f"{path}:{line}:{column}: modules[{i}]"
        repo = load_repo((path.parent / entry.path).resolve())
        out.append(
            _assign(
                repo,
                version=entry.version,
                category=entry.category,
                variety=entry.variety,
                parent=entry.parent,
                override=entry.effective_priority,
                where=where,
            )
        )
    return tpl.name, out


def assignments_for_repos(paths: Sequence[Path]) -> list[Assignment]:
    """Assign repos with no template file: everything from their manifests."""
    out = []
    for p in paths:
        repo = load_repo(p)
        out.append(
            _assign(
                repo,
                version=DEFAULT_VERSION,
                category=None,
                variety=None,
                parent=None,
                override=None,
                where=str(p),
            )
        )
    return out


def plan(name: str, assignments: Sequence[Assignment]) -> TemplatePlan:
    """Resolve the assignments' requirements among themselves, then compose them."""
    seen: dict[str, Path] = {}
    for a in assignments:
        if a.repo.name in seen:
            raise ConfigError(
                f"module {a.repo.name!r} assigned twice: {seen[a.repo.name]} and {a.repo.path}"
            )
        seen[a.repo.name] = a.repo.path
    roots = [
        Requirement(LOCAL_OWNER, a.repo.name, Constraint.parse(f"={a.version}"))
        for a in assignments
    ]
    planned = plan_template(
        roots, [a.entry() for a in assignments], {a.repo.name: a.priority for a in assignments}
    )
    return TemplatePlan(name, tuple(assignments), planned.resolution, planned.composition)
