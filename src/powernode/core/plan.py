"""A template's plan: its assignments resolved, prioritised, then composed.

The one computation behind ``powernode module compose`` (the local twin,
``toolchain.localtemplate``) and the platform's desired set
(``platform.services.desired``). The phases, each its own function:

1. **resolve**: every offered version is a :class:`PlanEntry`; the roots are
   the template's assignments; ``core.resolve`` chooses one version of each
   module they need, transitively (dependencies first);
2. **priority**: an assigned module takes the priority its assignment
   resolved to; a dependency nobody assigned takes its category position
   (``core.priority.effective_priority``);
3. **compose**: each chosen version becomes a ``core.compose.ModuleLayer``
   whose mask and protected patterns come from its :class:`Manifest`.

Pure: raises ``ResolutionError`` or ``CompositionError``; callers word them
for their audience.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from powernode.core.compose import DEFAULT_LIMITS, Limits, ModuleLayer, compose
from powernode.core.composition import Composition
from powernode.core.manifest import Manifest
from powernode.core.priority import Variety, effective_priority
from powernode.core.resolve import DEFAULT_ALLOWED_STATES, Candidate, Resolution, resolve
from powernode.core.semver import Requirement, Version

__all__ = ["Plan", "PlanEntry", "PlannedModule", "plan"]

DEFAULT_MAX_STEPS = 100_000


@dataclass(frozen=True)
class PlanEntry:
    """One version of one module a plan may choose."""

    owner: str
    version: Version
    manifest: Manifest
    files: tuple[str, ...]  # artifact paths; directories end with "/"
    requires: tuple[Requirement, ...]  # the manifest's, as the caller keys them
    variety: Variety
    parent: str | None
    category_position: int
    promotion_state: str = "live"

    @property
    def name(self) -> str:
        return self.manifest.name

    def candidate(self) -> Candidate:
        return Candidate(
            owner=self.owner,
            name=self.name,
            version=self.version,
            requires=self.requires,
            provides=self.manifest.provides,
            promotion_state=self.promotion_state,
        )


@dataclass(frozen=True)
class PlannedModule:
    """One chosen version, its priority, and why it is in the plan."""

    entry: PlanEntry
    priority: int
    assigned: bool  # False: pulled in as a dependency of an assigned module
    reason: str  # the chain of requirements that brought it in


@dataclass(frozen=True)
class Plan:
    resolution: Resolution
    modules: tuple[PlannedModule, ...]  # install order: dependencies first
    composition: Composition


def choose(
    roots: Sequence[Requirement],
    entries: Iterable[PlanEntry],
    *,
    allowed_states: frozenset[str] = DEFAULT_ALLOWED_STATES,
    max_steps: int = DEFAULT_MAX_STEPS,
    root_label: str = "template",
) -> tuple[Resolution, list[PlanEntry]]:
    """Phase 1: the resolution, and the chosen entries in install order."""
    by_key: dict[tuple[str, str], PlanEntry] = {}
    candidates: list[Candidate] = []
    for e in entries:
        c = e.candidate()
        candidates.append(c)
        by_key[c.key, str(c.version)] = e
    resolution = resolve(
        roots,
        candidates,
        allowed_states=allowed_states,
        max_steps=max_steps,
        root_label=root_label,
    )
    return resolution, [by_key[c.key, str(c.version)] for c in resolution.order]


def prioritise(
    resolution: Resolution, chosen: Sequence[PlanEntry], priorities: Mapping[str, int]
) -> tuple[PlannedModule, ...]:
    """Phase 2: each chosen entry with its priority (assigned: ``priorities[name]``)."""
    out = []
    for e in chosen:
        assigned = priorities.get(e.name)
        prio = (
            assigned if assigned is not None else effective_priority(e.category_position, e.variety)
        )
        key = f"{e.owner}/{e.name}"
        out.append(PlannedModule(e, prio, assigned is not None, resolution.explain(key)))
    return tuple(out)


def layer(module: PlannedModule) -> ModuleLayer:
    """Phase 3's input: one planned module as composition sees it."""
    e = module.entry
    return ModuleLayer(
        name=e.name,
        priority=module.priority,
        variety=e.variety,
        parent=e.parent,
        files=e.files,
        mask=e.manifest.mask,
        protected=e.manifest.protected_spec,
    )


def plan(
    roots: Sequence[Requirement],
    entries: Iterable[PlanEntry],
    priorities: Mapping[str, int],
    *,
    allowed_states: frozenset[str] = DEFAULT_ALLOWED_STATES,
    max_steps: int = DEFAULT_MAX_STEPS,
    root_label: str = "template",
    limits: Limits = DEFAULT_LIMITS,
) -> Plan:
    """Resolve ``roots`` among ``entries``, prioritise, compose.

    ``priorities`` maps each assigned module's name to its resolved priority;
    a module missing from it is a dependency and takes its category position.
    """
    resolution, chosen = choose(
        roots,
        entries,
        allowed_states=allowed_states,
        max_steps=max_steps,
        root_label=root_label,
    )
    modules = prioritise(resolution, chosen, priorities)
    composition = compose([layer(m) for m in modules], limits)
    return Plan(resolution, modules, composition)
