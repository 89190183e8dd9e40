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
from collections.abc import Sequence
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

__all__ = ["Composition", "ModuleLayer", "compose"]

log = logging.getLogger(__name__)

MAX_MODULES: Final = 1000
MAX_PATTERNS: Final = 1000  # per list (mask, protected) per module

# One element of "\0".join(paths) that is not a normalised absolute path:
# not starting with "/", an empty component, or a "." / ".." component.
_BAD_PATH: Final = re.compile(r"^(?!/)|//|/\.\.?(?:/|$)")


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


def _bad_path(files: Sequence[str]) -> str | None:
    # Substring tests on the joined list run in C; the per-path regex only
    # runs to name the culprit once the list is known to hold one.
    if not files:
        return None
    j = "\0".join(files) + "\0"
    n = len(files)
    if (
        j.count("\0") != n
        or j[0] != "/"
        or j.count("\0/") != n - 1
        or "//" in j
        or "/./" in j
        or "/.\0" in j
        or "/../" in j
        or "/..\0" in j
    ):
        for p in files:
            if "\0" in p or _BAD_PATH.search(p):
                return p
    return None


def _compile(layers: Sequence[ModuleLayer], conflicts: list[str]) -> list[_Compiled]:
    seen: set[str] = set()
    out: list[_Compiled] = []
    for layer in layers:
        if layer.name in seen:
            conflicts.append(f"module {layer.name!r} is listed twice; list each module once")
            continue
        seen.add(layer.name)
        sets: dict[str, GlobSet] = {}
        for field in ("mask", "protected"):
            patterns: tuple[str, ...] = getattr(layer, field)
            if len(patterns) > MAX_PATTERNS:
                conflicts.append(f"module {layer.name!r}: {field}: over {MAX_PATTERNS} patterns")
                continue
            try:
                sets[field] = GlobSet(dict.fromkeys(patterns))
            except GlobError as e:
                conflicts.append(f"module {layer.name!r}: {field}: {e}")
        bad = _bad_path(layer.files)
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


def compose(layers: Sequence[ModuleLayer]) -> Composition:
    """Compose ``layers`` (any order); raises :class:`CompositionError` with every conflict."""
    if len(layers) > MAX_MODULES:
        raise CompositionError(
            f"{len(layers)} modules: more than {MAX_MODULES}; split the template"
        )
    conflicts: list[str] = []
    mods = _compile(
        sorted(layers, key=lambda m: priority_key(m.name, m.priority, m.variety)), conflicts
    )
    if conflicts:
        raise _fail(conflicts)
    names = [m.layer.name for m in mods]

    # Every protected pattern, tagged with its owner; identical ones conflict.
    owner_of: list[int] = []
    prot_patterns: list[str] = []
    first_owner: dict[str, int] = {}
    for i, m in enumerate(mods):
        for pat in m.protected.patterns:
            if pat in first_owner:
                conflicts.append(
                    f"modules {names[first_owner[pat]]!r} and {names[i]!r} both list "
                    f"protected pattern {pat!r}; a path has one owner: remove it from one "
                    "protected_spec"
                )
                continue
            first_owner[pat] = i
            owner_of.append(i)
            prot_patterns.append(pat)
    all_prot = GlobSet(prot_patterns)

    # path -> names of the modules shipping it, highest priority first (before
    # drops). The hot loop of compose(): kept to one dict probe per path.
    # Most paths have one provider: a shared 1-tuple per module; a path gets
    # its own list only when a second module ships it.
    ships: dict[str, tuple[str, ...]] = {}
    shared: dict[str, list[str]] = {}
    get = ships.get
    for m in reversed(mods):
        one = (m.layer.name,)
        for p in set(m.layer.files):
            have = get(p)
            if have is None:
                ships[p] = one
            elif p in shared:
                shared[p].append(one[0])
            else:
                shared[p] = [*have, one[0]]
    for p, more in shared.items():
        ships[p] = tuple(more)

    files = [p for p in ships if p[-1] != "/"]
    for p in [p for p in ships if p[-1] == "/"]:
        if len(p) > 1 and p[:-1] in ships:
            as_dir = ", ".join(map(repr, ships[p]))
            as_file = ", ".join(map(repr, ships[p[:-1]]))
            conflicts.append(
                f"{p[:-1]!r} is a directory in {as_dir} but a file in {as_file}; "
                "one kind per path: rename or remove one"
            )

    # Owner of each protected path in the union (one regex call per path).
    hits = all_prot.find_many(files)
    owner: dict[str, tuple[int, str]] = {}  # only paths with exactly one owner
    # Count owners per hit with one bulk pass per protecting module: the hits
    # are few next to the union, and a joined regex can only name one owner.
    n_owners: dict[str, int] = dict.fromkeys(hits, 0)
    for i, m in enumerate(mods):
        kept = [q for q, j in zip(prot_patterns, owner_of, strict=True) if j == i]
        if kept:
            gs = m.protected if len(kept) == len(m.protected) else GlobSet(kept)
            for p in gs.find_many(hits):
                n_owners[p] += 1
    for p, k in hits.items():
        o = owner_of[k]
        if n_owners[p] > 1:
            both = [j for j in range(len(mods)) if mods[j].protected.matches(p)]
            pats = [mods[j].protected.patterns[mods[j].protected.which(p)[0]] for j in both]
            who = " and ".join(f"{names[j]!r} ({pat!r})" for j, pat in zip(both, pats, strict=True))
            conflicts.append(
                f"modules {who} both protect {p!r}; a path has one owner: narrow one protected_spec"
            )
            continue
        owner[p] = (o, prot_patterns[k])

    # Masks meeting protected paths: a takeover, or a conflict.
    takeover: dict[str, tuple[int, str]] = {}
    all_mask = GlobSet(pat for m in mods for pat in m.mask.patterns)
    # Paths with two owners already conflict; their masks are still checked
    # against the first owner found, so one run reports everything.
    for p in sorted(all_mask.find_many(hits)):
        o = owner_of[hits[p]]
        for i, m in enumerate(mods):
            hit = m.mask.find(p)
            if i == o or hit is None:
                continue
            pat = m.mask.patterns[hit]
            lay = m.layer
            if lay.variety is Variety.CONFIG and lay.parent == names[o]:
                if p in takeover:
                    a, b = sorted((names[takeover[p][0]], names[i]))
                    conflicts.append(
                        f"config modules {a!r} and {b!r} both take over {p!r} from "
                        f"{names[o]!r}; only one may: narrow one mask"
                    )
                    continue
                takeover[p] = (i, pat)
                continue
            conflicts.append(
                f"module {names[i]!r} ({lay.variety.value}): mask pattern {pat!r} matches "
                f"{p!r}, protected by {names[o]!r}; only a config module whose parent_module "
                f"is {names[o]!r} may take over {names[o]!r}'s protected path: narrow the mask"
            )
    if conflicts:
        raise _fail(conflicts)

    dropped: list[Dropped] = []
    gone: dict[str, set[str]] = {}
    for p, (o, opat) in owner.items():
        t = takeover.get(p)
        for n in ships[p]:
            if t is not None and n == names[t[0]]:
                continue
            if t is not None and n == names[o]:
                dropped.append(Dropped(p, n, "takeover", names[t[0]], t[1]))
            elif n != names[o]:
                dropped.append(Dropped(p, n, "protected", names[o], opat))
            else:
                continue
            gone.setdefault(p, set()).add(n)
    for i, m in enumerate(mods):
        if not m.mask.patterns:
            continue
        own = m.mask.find_many(q for q in m.layer.files if q[-1] != "/")
        for p, at in own.items():
            if p in takeover and takeover[p][0] == i:
                continue  # the mask entry declares the takeover; the copy stays
            if names[i] in gone.get(p, ()):
                continue
            dropped.append(Dropped(p, names[i], "mask", names[i], m.mask.patterns[at]))
            gone.setdefault(p, set()).add(names[i])

    for p, lost in gone.items():
        alive = tuple(n for n in ships[p] if n not in lost)
        if alive:
            ships[p] = alive
        else:
            del ships[p]
    # (path, providers) pairs become UnionEntry tuples without a Python-level
    # call per path: the union is most of compose()'s output.
    keys = sorted(ships)
    pairs = zip(keys, map(ships.__getitem__, keys), strict=True)
    union = list(map(partial(tuple.__new__, UnionEntry), pairs))

    stacked = tuple(
        StackedModule(
            name=m.layer.name,
            priority=m.layer.priority,
            variety=m.layer.variety,
            parent=m.layer.parent,
            effective_mask=tuple(
                sorted(
                    set(m.mask.patterns)
                    | {q for q, j in zip(prot_patterns, owner_of, strict=True) if j != i}
                )
            ),
        )
        for i, m in enumerate(mods)
    )
    takeovers = tuple(
        sorted(
            Takeover(p, names[c], names[owner[p][0]], pat, names[c] in ships.get(p, ()))
            for p, (c, pat) in takeover.items()
        )
    )
    log.debug(
        "composed %d modules: %d union paths, %d dropped, %d takeovers",
        len(mods),
        len(union),
        len(dropped),
        len(takeovers),
    )
    return Composition(stacked, tuple(union), tuple(sorted(dropped)), takeovers)
