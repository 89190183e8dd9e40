"""What a template should run: its assignments resolved, then composed.

The composition preview and the drift report share this one computation,
the core's template plan (``core.plan``, which ``powernode module compose``
runs too); this module feeds it the catalog and words its failures:

1. every version of the account's modules becomes a ``core.plan.PlanEntry``
   (its stored manifest.json read once into the core's ``Manifest``:
   requires, provides, mask and protected_spec);
2. each assignment is a root requirement ``<module>@*``; ``core.resolve``
   chooses the highest version in an allowed promotion state (preview
   default ``blessed`` and ``live``; what a node is served is
   :func:`node_states`: ``live``, or also ``staging`` and ``blessed`` on a
   test node), pulling in dependencies that are not assigned themselves;
3. each chosen version becomes a ``core.compose.ModuleLayer`` (file list,
   mask, protected_spec) with its priority on the operator's scale: the
   assignment's override, else the category position (``core.priority``;
   the variety orders equal priorities); a dependency that is not assigned
   gets its category position.

Module names are unique per account, so inside the platform a requirement's
owner does not pick between modules: ``acme/redis`` and ``powernode/redis``
both name the account's module ``redis``. Candidates and requirements are
keyed under :data:`OWNER` for that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import contains_eager

from powernode.core.composition import Composition
from powernode.core.manifest import Manifest
from powernode.core.plan import PlanEntry, plan
from powernode.core.priority import Variety
from powernode.core.resolve import DEFAULT_ALLOWED_STATES
from powernode.core.semver import Requirement, Version
from powernode.errors import CompositionError, ResolutionError, VersionError
from powernode.platform.db import (
    NodeModule,
    NodeModuleAssignment,
    NodeModuleVersion,
    NodeTemplate,
    PromotionState,
)
from powernode.platform.problems import ConflictError, InvalidInputError
from powernode.platform.services import desired_cache
from powernode.platform.services.context import Ctx
from powernode.platform.services.templates import get_template, resolved_priority

log = logging.getLogger(__name__)

OWNER = "account"
# A preview must not turn into an unbounded search on a pathological catalog.
MAX_RESOLVE_STEPS = 20_000


class UnresolvableError(ConflictError):
    """The template's assignments have no solution, or do not compose."""

    slug = "template-unresolvable"
    title = "Template does not resolve"


@dataclass(frozen=True)
class DesiredModule:
    """One module the template's instances should run, and why."""

    name: str
    module_id: str
    version_id: str
    version_string: str
    promotion_state: str
    composefs_digest: str | None
    priority: int
    variety: str
    assigned: bool  # False: pulled in as a dependency of an assigned module
    reason: str  # the chain of requirements that brought it in


@dataclass(frozen=True)
class DesiredSet:
    template_id: str
    template_name: str
    allowed_states: frozenset[str]
    modules: tuple[DesiredModule, ...]  # install order: dependencies first
    composition: Composition

    def digests(self) -> dict[str, str | None]:
        return {m.name: m.composefs_digest for m in self.modules}


# Which promotion states a node is served (issue 13 item 2). Going live needs
# the promote-live scope and, under require_approval, a second person's
# approval; so an ordinary node runs live versions only, and an assignment
# alone can never put a blessed or staging version on it. Versions that are
# not live yet (staging, blessed) run only on nodes marked as test nodes
# (node metadata ``"test": true``), and marking a node so needs promote-live
# too (services/nodes.py): a token that cannot go live cannot cause any node
# to run a version that is not live.
PRODUCTION_STATES: Final = frozenset({PromotionState.LIVE.value})
TEST_NODE_STATES: Final = frozenset(
    {PromotionState.STAGING.value, PromotionState.BLESSED.value, PromotionState.LIVE.value}
)
TEST_NODE_KEY: Final = "test"


def is_test_node(metadata: Mapping[str, object] | None) -> bool:
    return metadata is not None and metadata.get(TEST_NODE_KEY) is True


def node_states(metadata: Mapping[str, object] | None) -> frozenset[str]:
    """The promotion states a node with this metadata may run (see PRODUCTION_STATES)."""
    return TEST_NODE_STATES if is_test_node(metadata) else PRODUCTION_STATES


def parse_states(values: Iterable[str] | None) -> frozenset[str]:
    """Allowed promotion states from a query (None or empty: blessed and live)."""
    states = frozenset(v for v in values or () if v)
    if not states:
        return DEFAULT_ALLOWED_STATES
    known = {s.value for s in PromotionState}
    unknown = sorted(states - known)
    if unknown:
        raise InvalidInputError(
            f"allowed_states {', '.join(unknown)}: choose from {', '.join(sorted(known))}",
            field="allowed_states",
        )
    return states


def _requirements(manifest: Manifest, where: str) -> tuple[Requirement, ...]:
    try:
        parsed = manifest.requirements()
    except VersionError as e:
        raise UnresolvableError(f"{where}: manifest dependencies.requires: {e}") from e
    return tuple(Requirement(OWNER, r.name, r.constraint) for r in parsed)


def _entries(
    rows: Iterable[NodeModuleVersion],
) -> tuple[list[PlanEntry], dict[tuple[str, str], NodeModuleVersion]]:
    """Each version a plan may choose, its stored manifest read once into the core's model."""
    entries = []
    by_key: dict[tuple[str, str], NodeModuleVersion] = {}
    for v in rows:
        if v.promotion_state == PromotionState.RETIRED.value:
            continue  # never chosen, and listing it in errors only confuses
        m = v.module
        where = f"module {m.name} version {v.version_string}"
        try:
            version = Version.parse(v.version_string)
        except VersionError as e:  # register_version refuses these; be safe anyway
            raise UnresolvableError(f"{where}: {e}") from e
        manifest = Manifest.from_stored(v.manifest, name=m.name)
        entries.append(
            PlanEntry(
                owner=OWNER,
                version=version,
                manifest=manifest,
                files=tuple(v.file_list),
                requires=_requirements(manifest, where),
                variety=Variety(m.variety),
                parent=m.parent_module.name if m.parent_module is not None else None,
                category_position=m.category.position,
                promotion_state=v.promotion_state,
            )
        )
        by_key[m.name, str(version)] = v
    return entries, by_key


def desired_set(
    ctx: Ctx, template_ref: str, allowed_states: frozenset[str] = DEFAULT_ALLOWED_STATES
) -> DesiredSet:
    """Resolve and compose ``template_ref``; UnresolvableError (409) says why it cannot."""
    template = get_template(ctx, template_ref)
    return desired_for(ctx, template, allowed_states)


def desired_for(
    ctx: Ctx,
    template: NodeTemplate,
    allowed_states: frozenset[str] = DEFAULT_ALLOWED_STATES,
    held_back: frozenset[str] = frozenset(),
) -> DesiredSet:
    """The desired set, from the cache when nothing it depends on has changed.

    ``held_back``: version ids never chosen for this node — a rollout's new
    version on a node no wave has reached yet (services/rollouts.py), so the
    resolver picks the version before it.
    """
    key = desired_cache.cache_key(ctx, template, allowed_states, held_back)
    found = desired_cache.CACHE.get(key)
    if found is not None:
        return found
    computed = _compute(ctx, template, allowed_states, held_back)
    desired_cache.CACHE.put(key, computed)
    return computed


def _compute(
    ctx: Ctx,
    template: NodeTemplate,
    allowed_states: frozenset[str],
    held_back: frozenset[str] = frozenset(),
) -> DesiredSet:
    assignments: dict[str, NodeModuleAssignment] = {a.module.name: a for a in template.assignments}
    # One query for every version with its module, category and parent (no N+1).
    rows = (
        ctx.session.scalars(
            select(NodeModuleVersion)
            .join(NodeModuleVersion.module)
            .where(NodeModule.account == ctx.actor.account)
            .options(contains_eager(NodeModuleVersion.module).joinedload(NodeModule.parent_module))
        )
        .unique()
        .all()
    )
    entries, by_key = _entries(r for r in rows if r.id not in held_back)
    # An assignment a rollout has not brought to this node yet: every version held back.
    kept = {r.module.name for r in rows if r.id not in held_back}
    withheld = {r.module.name for r in rows if r.id in held_back} - kept
    assignments = {n: a for n, a in assignments.items() if n not in withheld}
    roots = [Requirement(OWNER, name) for name in sorted(assignments)]
    priorities = {name: resolved_priority(a) for name, a in assignments.items()}
    label = f"template {template.name}"
    try:
        planned = plan(
            roots,
            entries,
            priorities,
            allowed_states=allowed_states,
            max_steps=MAX_RESOLVE_STEPS,
            root_label=label,
        )
    except ResolutionError as e:
        raise UnresolvableError(
            f"{label} does not resolve: {e}. Promote the versions it needs "
            f"(allowed states: {', '.join(sorted(allowed_states))}) or change the assignments",
            template=template.name,
        ) from e
    except CompositionError as e:
        raise UnresolvableError(
            f"{label} does not compose: {e}", template=template.name, conflicts=e.conflicts[:50]
        ) from e
    modules = []
    for pm in planned.modules:
        v = by_key[pm.entry.name, str(pm.entry.version)]
        modules.append(
            DesiredModule(
                name=pm.entry.name,
                module_id=v.module.id,
                version_id=v.id,
                version_string=v.version_string,
                promotion_state=v.promotion_state,
                composefs_digest=v.composefs_digest,
                priority=pm.priority,
                variety=pm.entry.variety.value,
                assigned=pm.assigned,
                reason=pm.reason,
            )
        )
    log.debug("template %s: %d module(s) desired", template.name, len(modules))
    return DesiredSet(
        template_id=template.id,
        template_name=template.name,
        allowed_states=allowed_states,
        modules=tuple(modules),
        composition=planned.composition,
    )
