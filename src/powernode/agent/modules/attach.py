"""Attach, detach, restore and report modules: verify, then restack, then record.

Every change is a transaction over the whole attached set: all modules of
the new set are verified (:mod:`.integrity`) before anything is mounted; if
any is refused, nothing new is mounted, the union being served stays, and
the refusals are recorded (``status``) and raised (:class:`ModuleRefused`,
which the runtime turns into events). Otherwise the new union is swapped in
(:mod:`.union`) and the state file records it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from powernode.agent.modules.integrity import VerifiedImage, verify_module
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.masks import plan_fixes
from powernode.agent.modules.refusal import ModuleRefused, Refusal
from powernode.agent.modules.render import Renders, load_facts, save_facts, templates_of
from powernode.agent.modules.state import (
    AttachState,
    ModuleSpec,
    check_module_name,
    load_composition,
    next_previous,
    save_composition,
)
from powernode.agent.modules.union import restack, serving_enforced_union, serving_union
from powernode.core.composition import Composition
from powernode.durable import write_bytes
from powernode.errors import ConfigError, DataError
from powernode.image.contract import render_module_set

log = logging.getLogger(__name__)
BOOT_SET = "boot.set"  # the initramfs's last good set (image.bootlayout renders the same path)


@dataclass(frozen=True)
class AttachResult:
    """The union now served: its generation and modules, top (highest priority) first."""

    generation: int
    modules: tuple[ModuleSpec, ...]
    changed: bool
    refused: tuple[Refusal, ...] = ()  # restore only: modules left out, and why


def _ordered(modules: Mapping[str, ModuleSpec]) -> tuple[ModuleSpec, ...]:
    return tuple(sorted(modules.values(), key=lambda m: (-m.priority, m.name)))


def _wanted_digests(modules: Mapping[str, ModuleSpec]) -> tuple[str, ...]:
    return tuple(m.hex for m in _ordered(modules))


@contextlib.contextmanager
def _verified(
    layout: NodeLayout, modules: Sequence[ModuleSpec], *, deep: bool, partial: bool
) -> Iterator[tuple[list[tuple[VerifiedImage, int]], list[Refusal]]]:
    """Verify every module; yields (verified, refusals). Without ``partial`` refusals raise."""
    seals = layout.seals()
    verified: list[tuple[VerifiedImage, int]] = []
    refusals: list[Refusal] = []
    try:
        for m in modules:
            try:
                v = verify_module(layout.store, m.name, m.digest, seals=seals, deep=deep)
            except ModuleRefused as e:
                refusals.extend(e.refusals)
                continue
            verified.append((v, m.priority))
        if refusals and not partial:
            raise ModuleRefused(refusals)
        yield verified, refusals
    finally:
        for v, _ in verified:
            v.close()


def _record_refusals(layout: NodeLayout, state: AttachState, refusals: Sequence[Refusal]) -> None:
    by_module: dict[str, tuple[Refusal, ...]] = dict(state.refusals)
    for name in {r.module for r in refusals}:
        by_module[name] = tuple(r for r in refusals if r.module == name)
    layout.state_file.save(replace(state, refusals=by_module))


def record_refusals(layout: NodeLayout, refusals: Sequence[Refusal]) -> None:
    """Remember why modules were refused (pull or signature failures), for ``status``."""
    with layout.state_file.locked():
        _record_refusals(layout, layout.state_file.load(), refusals)


Facts = Mapping[str, Mapping[str, str]]  # module -> its placeholder facts (instance variety)


def _renders(layout: NodeLayout, target: Mapping[str, ModuleSpec], facts: Facts) -> Renders:
    """What to render per module (:mod:`.render`): its manifest's templates and its facts."""
    from powernode.agent.initactions import load_manifest  # noqa: PLC0415 - no import cycle

    out = {}
    problems = []
    for name in sorted(facts):
        if name not in target:
            continue
        try:
            manifest = load_manifest(layout, name)
        except ConfigError:
            continue  # no config on record (attached from the store as it is): nothing declared
        try:
            templates = templates_of(manifest, f"module {name}: manifest field 'templates'")
        except DataError as e:
            problems.append(Refusal(name, target[name].digest, "placeholder", str(e)))
            continue
        if templates:
            out[name] = (templates, facts[name])
    if problems:
        raise ModuleRefused(problems)
    return out


def _same_fixes(
    old: Composition | None, new: Composition | None, target: Mapping[str, ModuleSpec]
) -> bool:
    """Whether two compositions fix the same paths of ``target``'s stack (union.restack's
    mask layer): then the union they build is the same, and nothing need be restacked."""
    stack = [m.name for m in _ordered(target)]
    try:
        before = plan_fixes(old, stack) if old is not None else []
        after = plan_fixes(new, stack) if new is not None else []
    except DataError:
        return False  # a bad entry: the restack says so
    return before == after


def _facts_for(layout: NodeLayout, target: Mapping[str, ModuleSpec], facts: Facts | None) -> Facts:
    chosen = load_facts(layout.agent_dir) if facts is None else facts
    return {n: dict(f) for n, f in chosen.items() if n in target}


def _apply_locked(
    layout: NodeLayout,
    state: AttachState,
    target: Mapping[str, ModuleSpec],
    *,
    deep: bool,
    composition: Composition | None = None,
    facts: Facts | None = None,
) -> AttachResult:
    stored = load_composition(layout.agent_dir)
    new_composition = composition is not None and composition != stored
    composition = composition if composition is not None else stored
    wanted_facts = _facts_for(layout, target, facts)
    new_facts = wanted_facts != _facts_for(layout, target, None)
    same = (
        state.mounted == _wanted_digests(target)
        and not new_facts
        and (not new_composition or _same_fixes(stored, composition, target))
    )
    if same and (not target or serving_union(layout)):
        if new_composition and composition is not None:
            # e.g. the first sync after boot: the initramfs stacked by priority alone, and the
            # platform's composition changes no path of this stack; kept for later restacks
            save_composition(layout.agent_dir, composition)
        if dict(state.modules) != dict(target):  # e.g. a version label changed, same content
            previous = next_previous(state, target)
            layout.state_file.save(replace(state.with_modules(target), previous=previous))
        return AttachResult(state.generation, _ordered(target), changed=False)
    try:
        renders = _renders(layout, target, wanted_facts)
        with _verified(layout, _ordered(target), deep=deep, partial=False) as (verified, _):
            generation = state.generation + 1
            mounted = restack(
                layout, verified, generation, composition=composition, renders=renders
            )
    except ModuleRefused as e:
        _record_refusals(layout, state, e.refusals)
        log.warning("%s", e)
        raise
    refusals = {n: r for n, r in state.refusals.items() if n not in target}
    if new_composition and composition is not None:
        save_composition(layout.agent_dir, composition)
    if wanted_facts != load_facts(layout.agent_dir):
        save_facts(layout.agent_dir, wanted_facts)
    previous = next_previous(state, target)
    layout.state_file.save(AttachState(dict(target), generation, mounted, refusals, previous))
    keep_boot_set(layout, target)
    return AttachResult(generation, _ordered(target), changed=True)


def keep_boot_set(layout: NodeLayout, target: Mapping[str, ModuleSpec]) -> None:
    """On a node the initramfs composed (it wrote ``boot.set``): the set now served becomes
    the last good set the next boot composes, so a reboot keeps what the node converged to."""
    path = layout.agent_dir / BOOT_SET
    if path.is_file():
        write_bytes(path, render_module_set(target.values()).encode())


def apply(
    layout: NodeLayout,
    target: Mapping[str, ModuleSpec],
    *,
    deep: bool = False,
    composition: Composition | None = None,
    facts: Facts | None = None,
) -> AttachResult:
    """Make exactly ``target`` (by module name) the attached set; ModuleRefused if any fails.

    ``composition`` (the desired set's, from the platform) decides winners the
    priority order alone would get wrong; it is kept for later restacks and
    restarts (``None``: keep the one stored, if any). ``facts`` (module ->
    placeholder facts, for the instance-variety modules) render their
    templates (:mod:`.render`); kept likewise.
    """
    with layout.state_file.locked():
        state = layout.state_file.load()
        return _apply_locked(layout, state, target, deep=deep, composition=composition, facts=facts)


def attach(layout: NodeLayout, module: ModuleSpec, *, deep: bool = False) -> AttachResult:
    """Add ``module`` (or replace the attached module of that name) and restack."""
    with layout.state_file.locked():
        state = layout.state_file.load()
        target = {**state.modules, module.name: module}
        return _apply_locked(layout, state, target, deep=deep)


def detach(layout: NodeLayout, name: str) -> AttachResult:
    """Remove module ``name`` and restack (the rest are verified again); ConfigError if absent."""
    check_module_name(name)
    with layout.state_file.locked():
        state = layout.state_file.load()
        if name not in state.modules:
            attached = ", ".join(sorted(state.modules)) or "none"
            raise ConfigError(f"module {name!r} is not attached (attached: {attached})")
        target = {n: m for n, m in state.modules.items() if n != name}
        return _apply_locked(layout, state, target, deep=False)


def _restore_stack(
    layout: NodeLayout,
    state: AttachState,
    verified: list[tuple[VerifiedImage, int]],
    generation: int,
    *,
    composition: Composition | None,
    refusals: list[Refusal],
) -> tuple[str, ...]:
    """Restack what verified with the stored facts; a module whose templates no longer
    render is left out (added to ``refusals``) and the rest are stacked once more."""
    facts = _facts_for(layout, state.modules, None)
    try:
        renders = _renders(layout, state.modules, facts)
        return restack(layout, verified, generation, composition=composition, renders=renders)
    except ModuleRefused as e:
        refusals.extend(e.refusals)
        out = {r.module for r in e.refusals}
        kept = [(v, p) for v, p in verified if v.module not in out]
        renders = _renders(layout, state.modules, {n: f for n, f in facts.items() if n not in out})
        return restack(layout, kept, generation, composition=composition, renders=renders)


def restore(layout: NodeLayout) -> AttachResult:
    """On agent start: remount what was attached, verifying every module deeply again
    (unless the union serving the root is that set with ``verity=require``).

    A module that no longer verifies is left out (the rest are served: a node
    that boots should serve what it can prove) and reported in ``refused``;
    it stays attached, so the next sync or attach retries it.
    """
    with layout.state_file.locked():
        state = layout.state_file.load()
        ordered = _ordered(state.modules)
        if (
            state.modules
            and state.mounted == _wanted_digests(state.modules)
            and serving_enforced_union(layout)
        ):
            # The set recorded is the one serving, with the kernel enforcing fs-verity on
            # every read (e.g. as the initramfs composed it): nothing to remount or rehash.
            log.info("restore: generation %d serves the attached set with verity=require; "
                     "kept as it is", state.generation)  # fmt: skip
            return AttachResult(state.generation, ordered, changed=False)
        with _verified(layout, ordered, deep=True, partial=True) as (verified, refusals):
            generation = state.generation + 1
            composition = load_composition(layout.agent_dir)
            mounted = _restore_stack(
                layout, state, verified, generation, composition=composition, refusals=refusals
            )
        kept: dict[str, tuple[Refusal, ...]] = {}
        for name in {r.module for r in refusals}:
            kept[name] = tuple(r for r in refusals if r.module == name)
        layout.state_file.save(
            AttachState(dict(state.modules), generation, mounted, kept, state.previous)
        )
        for r in refusals:
            log.warning("restore: %s", r)
        return AttachResult(generation, ordered, changed=True, refused=tuple(refusals))
