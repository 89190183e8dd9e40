"""Which files of a module repo's tree the module ships.

The build filter is ``file_spec`` minus ``mask`` (seed 003: mask excludes from
the module's own blob), with one rule the seeds imply but do not spell out:
a path named *literally* (no wildcard) in both ``file_spec`` and ``mask`` is
kept. Listing the same path in both lists is otherwise contradictory; seed
003's ``chrony-no-pool`` pattern uses it to declare that a config module takes
over its parent's protected file, so the module must ship its own copy. The
composition (``core.compose``) then decides whether that takeover is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from powernode.core.globs import select, with_parents

_WILDCARDS = frozenset("*?[\\")


def is_literal(pattern: str) -> bool:
    """True when ``pattern`` names one path (no glob syntax)."""
    return not any(c in _WILDCARDS for c in pattern)


def takeover_paths(file_spec: Sequence[str], mask: Sequence[str]) -> frozenset[str]:
    """Literal paths present in both lists: takeover declarations, not excludes."""
    literal_includes = {p for p in file_spec if is_literal(p)}
    return frozenset(p for p in mask if is_literal(p) and p in literal_includes)


def build_mask(file_spec: Sequence[str], mask: Sequence[str]) -> tuple[str, ...]:
    """The mask the builder applies to the module's own blob."""
    keep = takeover_paths(file_spec, mask)
    return tuple(p for p in mask if p not in keep)


def shipped_paths(
    tree_paths: Iterable[str], file_spec: Sequence[str], mask: Sequence[str]
) -> list[str]:
    """Paths (directories end with "/") a module built from ``tree_paths`` ships.

    Parent directories of every selected path are kept so the tree can be
    written as an image.
    """
    chosen = select(list(tree_paths), list(file_spec), list(build_mask(file_spec, mask)))
    return sorted(with_parents(chosen))
