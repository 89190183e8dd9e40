"""Composition of modules into one root filesystem: masks, protection, takeovers.

Pure: takes :class:`ModuleLayer` values, returns a
:class:`~powernode.core.composition.Composition` or raises
:class:`CompositionError` listing every conflict. The rules (seed 003,
docs/composition.md):

- A module's *effective mask* is its own ``mask`` plus every other module's
  ``protected_spec``, in both priority directions. Its files the effective
  mask matches are dropped, and each drop is recorded with the module whose
  pattern caused it (seed 003 says "silently dropped"; the operator still
  sees it in ``dropped``).
- Protection and masks apply to non-directories. Directories merge in
  overlayfs, so a directory is never dropped and never won.
- Two modules protecting one union path, or listing one identical protected
  pattern, is a conflict.
- A config-variety module whose ``mask`` matches a path its ``parent``
  protects takes that path over: its own copy wins whatever the
  priorities, everyone else's copy is dropped, and when it ships none the
  path leaves the union (a carve-out). Any other mask matching another
  module's protected path is a conflict.
- Of the remaining providers of a file, the highest ``priority_key`` wins.

Speed: every pattern set is one joined regex (``core.globs.GlobSet``), so
each path costs one regex call per question, never one per pattern; the
slow per-module checks only run on paths a protected pattern matched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

from powernode.core.composition import (
    Composition,
    Dropped,
    StackedModule,
    Takeover,
    UnionEntry,
)
from powernode.core.globs import GlobSet
from powernode.core.priority import Variety, priority_key
from powernode.errors import CompositionError, GlobError

__all__ = ["DEFAULT_LIMITS", "Composition", "Limits", "ModuleLayer", "compose"]

log = logging.getLogger(__name__)

# One element of "\0".join(paths) that is not a normalised absolute path:
# not starting with "/", an empty component, or a "." / ".." component.
_BAD_PATH: Final = re.compile(r"^(?!/)|//|/\.\.?(?:/|$)")


@dataclass(frozen=True)
class Limits:
    """Bounds on one composition's input."""

    max_modules: int = 1000
    max_patterns: int = 1000  # per list (mask, protected) per module


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True)
class ModuleLayer:
    """One module as composition sees it."""

    name: str
    priority: int
    variety: Variety
    parent: str | None
    files: tuple[str, ...]  # artifact paths; directories end with "/"
    mask: tuple[str, ...]
    protected: tuple[str, ...]


@dataclass
class _Compiled:
    layer: ModuleLayer
    mask: GlobSet
    protected: GlobSet


@dataclass(frozen=True)
class _Protection:
    """Every protected pattern with the index of the module that owns it."""

    patterns: list[str]
    owner_index: list[int]  # owner_index[k] owns patterns[k]
    matcher: GlobSet  # patterns, joined

    def owned_by(self, index: int) -> list[str]:
        return [p for p, i in zip(self.patterns, self.owner_index, strict=True) if i == index]

    def not_owned_by(self, index: int) -> set[str]:
        return {p for p, i in zip(self.patterns, self.owner_index, strict=True) if i != index}


# A protected path's owner: (module index, the pattern that matched).
_Owner = tuple[int, str]


def _first_bad_path(files: Sequence[str]) -> str | None:
    # Substring tests on the joined list run in C; the per-path regex only
    # runs to name the culprit once the list is known to hold one.
    if not files:
        return None
    joined = "\0".join(files) + "\0"
    n = len(files)
    if (
        joined.count("\0") != n
        or joined[0] != "/"
        or joined.count("\0/") != n - 1
        or "//" in joined
        or "/./" in joined
        or "/.\0" in joined
        or "/../" in joined
        or "/..\0" in joined
    ):
        for path in files:
            if "\0" in path or _BAD_PATH.search(path):
                return path
    return None


def _compile(
    layers: Sequence[ModuleLayer], limits: Limits, conflicts: list[str]
) -> list[_Compiled]:
    """Phase 1: each layer checked (name once, patterns, paths), its patterns compiled."""
    seen: set[str] = set()
    out: list[_Compiled] = []
    for layer in layers:
        if layer.name in seen:
            conflicts.append(f"module {layer.name!r} is listed twice; list each module once")
            continue
        seen.add(layer.name)
        sets: dict[str, GlobSet] = {}
        for field, patterns in (("mask", layer.mask), ("protected", layer.protected)):
            if len(patterns) > limits.max_patterns:
                conflicts.append(
                    f"module {layer.name!r}: {field}: over {limits.max_patterns} patterns"
                )
                continue
            try:
                sets[field] = GlobSet(dict.fromkeys(patterns))
            except GlobError as e:
                conflicts.append(f"module {layer.name!r}: {field}: {e}")
        bad = _first_bad_path(layer.files)
        if bad is not None:
            conflicts.append(
                f"module {layer.name!r}: files: {bad!r} is not a normalised absolute path "
                "(starts with '/', no empty, '.' or '..' components)"
            )
        if len(sets) == 2:
            out.append(_Compiled(layer, sets["mask"], sets["protected"]))
    return out


def _fail(conflicts: list[str]) -> CompositionError:
    more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
    return CompositionError(
        f"{len(conflicts)} composition conflict(s): {conflicts[0]}{more}", conflicts
    )


def _protection(mods: Sequence[_Compiled], names: list[str], conflicts: list[str]) -> _Protection:
    """Phase 2: every protected pattern tagged with its owner; identical ones conflict."""
    owner_index: list[int] = []
    patterns: list[str] = []
    first_owner: dict[str, int] = {}
    for i, m in enumerate(mods):
        for pattern in m.protected.patterns:
            if pattern in first_owner:
                conflicts.append(
                    f"modules {names[first_owner[pattern]]!r} and {names[i]!r} both list "
                    f"protected pattern {pattern!r}; a path has one owner: remove it from one "
                    "protected_spec"
                )
                continue
            first_owner[pattern] = i
            owner_index.append(i)
            patterns.append(pattern)
    return _Protection(patterns, owner_index, GlobSet(patterns))


def _providers(mods: Sequence[_Compiled]) -> dict[str, tuple[str, ...]]:
    """Phase 3: path -> names of the modules shipping it, highest priority first.

    The hot loop of compose(): kept to one dict probe per path. Most paths
    have one provider: a shared 1-tuple per module; a path gets its own list
    only when a second module ships it.
    """
    ships: dict[str, tuple[str, ...]] = {}
    shared: dict[str, list[str]] = {}
    get = ships.get
    for m in reversed(mods):
        one = (m.layer.name,)
        for path in set(m.layer.files):
            have = get(path)
            if have is None:
                ships[path] = one
            elif path in shared:
                shared[path].append(one[0])
            else:
                shared[path] = [*have, one[0]]
    for path, more in shared.items():
        ships[path] = tuple(more)
    return ships


def _kind_conflicts(ships: Mapping[str, tuple[str, ...]], conflicts: list[str]) -> None:
    """Phase 4: a path shipped as a directory by some and as a file by others."""
    for path in [p for p in ships if p[-1] == "/"]:
        if len(path) > 1 and path[:-1] in ships:
            as_dir = ", ".join(map(repr, ships[path]))
            as_file = ", ".join(map(repr, ships[path[:-1]]))
            conflicts.append(
                f"{path[:-1]!r} is a directory in {as_dir} but a file in {as_file}; "
                "one kind per path: rename or remove one"
            )


def _protected_owners(
    mods: Sequence[_Compiled],
    names: list[str],
    protection: _Protection,
    hits: Mapping[str, int],
    conflicts: list[str],
) -> dict[str, _Owner]:
    """Phase 5: the one owner of each protected path; two owners conflict.

    Owners are counted with one bulk pass per protecting module: the hits
    are few next to the union, and a joined regex can only name one owner.
    """
    n_owners: dict[str, int] = dict.fromkeys(hits, 0)
    for i, m in enumerate(mods):
        kept = protection.owned_by(i)
        if kept:
            own = m.protected if len(kept) == len(m.protected) else GlobSet(kept)
            for path in own.find_many(hits):
                n_owners[path] += 1
    owner: dict[str, _Owner] = {}  # only paths with exactly one owner
    for path, k in hits.items():
        if n_owners[path] > 1:
            both = [j for j in range(len(mods)) if mods[j].protected.matches(path)]
            pats = [mods[j].protected.patterns[mods[j].protected.which(path)[0]] for j in both]
            who = " and ".join(f"{names[j]!r} ({pat!r})" for j, pat in zip(both, pats, strict=True))
            conflicts.append(
                f"modules {who} both protect {path!r}; a path has one owner: "
                "narrow one protected_spec"
            )
            continue
        owner[path] = (protection.owner_index[k], protection.patterns[k])
    return owner


def _takeovers(
    mods: Sequence[_Compiled],
    names: list[str],
    protection: _Protection,
    hits: Mapping[str, int],
    conflicts: list[str],
) -> dict[str, _Owner]:
    """Phase 6: masks meeting protected paths: a takeover (path -> taker), or a conflict.

    Paths with two owners already conflict; their masks are still checked
    against the first owner found, so one run reports everything.
    """
    takeover: dict[str, _Owner] = {}
    all_masks = GlobSet(pat for m in mods for pat in m.mask.patterns)
    for path in sorted(all_masks.find_many(hits)):
        o = protection.owner_index[hits[path]]
        for i, m in enumerate(mods):
            hit = m.mask.find(path)
            if i == o or hit is None:
                continue
            pattern = m.mask.patterns[hit]
            lay = m.layer
            if lay.variety is Variety.CONFIG and lay.parent == names[o]:
                if path in takeover:
                    a, b = sorted((names[takeover[path][0]], names[i]))
                    conflicts.append(
                        f"config modules {a!r} and {b!r} both take over {path!r} from "
                        f"{names[o]!r}; only one may: narrow one mask"
                    )
                    continue
                takeover[path] = (i, pattern)
                continue
            conflicts.append(
                f"module {names[i]!r} ({lay.variety.value}): mask pattern {pattern!r} matches "
                f"{path!r}, protected by {names[o]!r}; only a config module whose parent_module "
                f"is {names[o]!r} may take over {names[o]!r}'s protected path: narrow the mask"
            )
    return takeover


def _drops(
    mods: Sequence[_Compiled],
    names: list[str],
    ships: Mapping[str, tuple[str, ...]],
    owner: Mapping[str, _Owner],
    takeover: Mapping[str, _Owner],
) -> tuple[list[Dropped], dict[str, set[str]]]:
    """Phase 7: every copy protection, takeovers and own masks drop, and who drops what."""
    dropped: list[Dropped] = []
    gone: dict[str, set[str]] = {}
    for path, (o, owner_pattern) in owner.items():
        taker = takeover.get(path)
        for name in ships[path]:
            if taker is not None and name == names[taker[0]]:
                continue
            if taker is not None and name == names[o]:
                dropped.append(Dropped(path, name, "takeover", names[taker[0]], taker[1]))
            elif name != names[o]:
                dropped.append(Dropped(path, name, "protected", names[o], owner_pattern))
            else:
                continue
            gone.setdefault(path, set()).add(name)
    for i, m in enumerate(mods):
        if not m.mask.patterns:
            continue
        own = m.mask.find_many(q for q in m.layer.files if q[-1] != "/")
        for path, at in own.items():
            if path in takeover and takeover[path][0] == i:
                continue  # the mask entry declares the takeover; the copy stays
            if names[i] in gone.get(path, ()):
                continue
            dropped.append(Dropped(path, names[i], "mask", names[i], m.mask.patterns[at]))
            gone.setdefault(path, set()).add(names[i])
    return dropped, gone


def _union(ships: dict[str, tuple[str, ...]], gone: Mapping[str, set[str]]) -> list[UnionEntry]:
    """Phase 8: the providers left once drops are removed, as sorted union entries.

    Mutates ``ships``. (path, providers) pairs become UnionEntry tuples
    without a Python-level call per path: the union is most of the output.
    """
    for path, lost in gone.items():
        alive = tuple(n for n in ships[path] if n not in lost)
        if alive:
            ships[path] = alive
        else:
            del ships[path]
    keys = sorted(ships)
    pairs = zip(keys, map(ships.__getitem__, keys), strict=True)
    return list(map(partial(tuple.__new__, UnionEntry), pairs))


def _stack(mods: Sequence[_Compiled], protection: _Protection) -> tuple[StackedModule, ...]:
    """Each module with its effective mask: its own plus everyone else's protected."""
    return tuple(
        StackedModule(
            name=m.layer.name,
            priority=m.layer.priority,
            variety=m.layer.variety,
            parent=m.layer.parent,
            effective_mask=tuple(sorted(set(m.mask.patterns) | protection.not_owned_by(i))),
        )
        for i, m in enumerate(mods)
    )


def _takeover_records(
    names: list[str],
    owner: Mapping[str, _Owner],
    takeover: Mapping[str, _Owner],
    ships: Mapping[str, tuple[str, ...]],
) -> tuple[Takeover, ...]:
    return tuple(
        sorted(
            Takeover(path, names[c], names[owner[path][0]], pat, names[c] in ships.get(path, ()))
            for path, (c, pat) in takeover.items()
        )
    )


def compose(layers: Sequence[ModuleLayer], limits: Limits = DEFAULT_LIMITS) -> Composition:
    """Compose ``layers`` (any order); raises :class:`CompositionError` with every conflict."""
    if len(layers) > limits.max_modules:
        raise CompositionError(
            f"{len(layers)} modules: more than {limits.max_modules}; split the template"
        )
    conflicts: list[str] = []
    by_priority = sorted(layers, key=lambda m: priority_key(m.name, m.priority, m.variety))
    mods = _compile(by_priority, limits, conflicts)
    if conflicts:
        raise _fail(conflicts)
    names = [m.layer.name for m in mods]
    protection = _protection(mods, names, conflicts)
    ships = _providers(mods)
    _kind_conflicts(ships, conflicts)
    # Protected paths in the union (one regex call per path): path -> pattern index.
    hits = protection.matcher.find_many([p for p in ships if p[-1] != "/"])
    owner = _protected_owners(mods, names, protection, hits, conflicts)
    takeover = _takeovers(mods, names, protection, hits, conflicts)
    if conflicts:
        raise _fail(conflicts)
    dropped, gone = _drops(mods, names, ships, owner, takeover)
    union = _union(ships, gone)
    stacked = _stack(mods, protection)
    takeovers = _takeover_records(names, owner, takeover, ships)
    log.debug(
        "composed %d modules: %d union paths, %d dropped, %d takeovers",
        len(mods),
        len(union),
        len(dropped),
        len(takeovers),
    )
    return Composition(stacked, tuple(union), tuple(sorted(dropped)), takeovers)
