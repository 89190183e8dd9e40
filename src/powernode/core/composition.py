"""The result of composing modules: plain frozen data, JSON-ready and sorted.

Built by :func:`powernode.core.compose.compose`; see docs/composition.md.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar, cast

from powernode.core.priority import Variety
from powernode.errors import DataError

DropReason = Literal["mask", "protected", "takeover"]
_REASONS: frozenset[str] = frozenset({"mask", "protected", "takeover"})


@dataclass(frozen=True)
class StackedModule:
    """One module in the stack, with the mask composition applied to it."""

    name: str
    priority: int
    variety: Variety
    parent: str | None
    # Its own mask plus every other module's protected_spec patterns, sorted.
    effective_mask: tuple[str, ...]


class UnionEntry(NamedTuple):
    """One path of the union and the modules that provide it, highest priority first.

    A file has one winner and the rest are shadowed; a directory merges
    (overlayfs), so all its providers are listed and none wins.
    """

    path: str  # directories end with "/"
    providers: tuple[str, ...]

    @property
    def is_dir(self) -> bool:
        return self.path.endswith("/")

    @property
    def winner(self) -> str | None:
        return None if self.is_dir else self.providers[0]

    @property
    def shadowed(self) -> tuple[str, ...]:
        return () if self.is_dir else self.providers[1:]


class Dropped(NamedTuple):
    """A path a module ships that composition leaves out of the union, and why."""

    path: str
    module: str
    reason: DropReason  # own mask / another module's protected_spec / a takeover
    by: str  # the module whose pattern dropped it
    pattern: str  # the pattern that matched


class Takeover(NamedTuple):
    """A config module taking over a path its parent protects (seed 003 carve-out)."""

    path: str
    module: str  # the config-variety module
    parent: str  # its parent_module, the owner of the protected path
    pattern: str  # the config module's mask pattern that claims the path
    shipped: bool  # False: a carve-out, the path leaves the union


_T = TypeVar("_T")


def _path_of(e: UnionEntry) -> str:
    return e.path


def _need(d: Mapping[str, object], key: str, kind: type[_T], where: str) -> _T:
    if key not in d:
        raise DataError(f"composition: {where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, kind):
        raise DataError(f"composition: {where}.{key}: expected {kind.__name__}")
    return value


def _strs(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"composition: {where}: expected a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class Composition:
    """Modules in stacking order (lowest first), the union, drops and takeovers."""

    modules: tuple[StackedModule, ...]
    union: tuple[UnionEntry, ...]  # sorted by path
    dropped: tuple[Dropped, ...]  # sorted by (path, module)
    takeovers: tuple[Takeover, ...]  # sorted by (path, module)

    def winners(self) -> dict[str, str]:
        """File path -> winning module."""
        return {e.path: e.providers[0] for e in self.union if not e.is_dir}

    def entry(self, path: str) -> UnionEntry | None:
        """The union entry for ``path`` (directories with a trailing "/"), if any."""
        i = bisect_left(self.union, path, key=_path_of)
        if i < len(self.union) and self.union[i].path == path:
            return self.union[i]
        return None

    def to_dict(self) -> dict[str, object]:
        """Stable, sorted, JSON-serialisable form."""
        return {
            "modules": [
                {
                    "name": m.name,
                    "priority": m.priority,
                    "variety": m.variety.value,
                    "parent": m.parent,
                    "effective_mask": list(m.effective_mask),
                }
                for m in self.modules
            ],
            "union": [
                {
                    "path": e.path,
                    "kind": "dir" if e.is_dir else "file",
                    "winner": e.winner,
                    "shadowed": list(e.shadowed),
                    "providers": list(e.providers),
                }
                for e in self.union
            ],
            "dropped": [d._asdict() for d in self.dropped],
            "takeovers": [t._asdict() for t in self.takeovers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Composition:
        """Inverse of :meth:`to_dict`; raises :class:`DataError` naming the bad field."""
        if not isinstance(data, Mapping):
            raise DataError("composition: expected a mapping")
        modules = []
        for i, m in enumerate(_need(data, "modules", list, "")):
            w = f"modules[{i}]"
            if not isinstance(m, Mapping):
                raise DataError(f"composition: {w}: expected a mapping")
            try:
                variety = Variety(_need(m, "variety", str, w))
            except ValueError as e:
                raise DataError(f"composition: {w}.variety: {e}") from e
            parent = m.get("parent")
            if parent is not None and not isinstance(parent, str):
                raise DataError(f"composition: {w}.parent: expected str or null")
            modules.append(
                StackedModule(
                    name=_need(m, "name", str, w),
                    priority=_need(m, "priority", int, w),
                    variety=variety,
                    parent=parent,
                    effective_mask=_strs(m.get("effective_mask"), f"{w}.effective_mask"),
                )
            )
        union = []
        for i, u in enumerate(_need(data, "union", list, "")):
            w = f"union[{i}]"
            if not isinstance(u, Mapping):
                raise DataError(f"composition: {w}: expected a mapping")
            providers = _strs(u.get("providers"), f"{w}.providers")
            if not providers:
                raise DataError(f"composition: {w}.providers: empty")
            union.append(UnionEntry(_need(u, "path", str, w), providers))
        dropped = []
        for i, d in enumerate(_need(data, "dropped", list, "")):
            w = f"dropped[{i}]"
            if not isinstance(d, Mapping):
                raise DataError(f"composition: {w}: expected a mapping")
            fields = [_need(d, k, str, w) for k in Dropped._fields]
            if fields[2] not in _REASONS:
                raise DataError(f"composition: {w}.reason: {fields[2]!r} is not one of {_REASONS}")
            dropped.append(Dropped(fields[0], fields[1], cast(DropReason, fields[2]), *fields[3:]))
        takeovers = []
        for i, t in enumerate(_need(data, "takeovers", list, "")):
            w = f"takeovers[{i}]"
            if not isinstance(t, Mapping):
                raise DataError(f"composition: {w}: expected a mapping")
            takeovers.append(
                Takeover(
                    path=_need(t, "path", str, w),
                    module=_need(t, "module", str, w),
                    parent=_need(t, "parent", str, w),
                    pattern=_need(t, "pattern", str, w),
                    shipped=_need(t, "shipped", bool, w),
                )
            )
        return cls(tuple(modules), tuple(union), tuple(dropped), tuple(takeovers))

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """(headers, rows) for a CLI table: every union path, then every dropped one."""
        headers = ["path", "winner", "shadowed", "note"]
        taken = {t.path: t for t in self.takeovers}
        rows: list[list[str]] = []
        for e in self.union:
            if e.is_dir:
                rows.append([e.path, "", "", "dir: merged from " + ", ".join(e.providers)])
                continue
            t = taken.get(e.path)
            note = f"taken over from {t.parent} ({t.pattern})" if t else ""
            rows.append([e.path, e.providers[0], ", ".join(e.providers[1:]), note])
        for d in self.dropped:
            rows.append([d.path, "", d.module, f"dropped: {_why(d)}"])
        for t in self.takeovers:
            if not t.shipped:
                rows.append([t.path, "", t.parent, f"carved out by {t.module} ({t.pattern})"])
        return headers, rows


def _why(d: Dropped) -> str:
    if d.reason == "mask":
        return f"own mask {d.pattern}"
    if d.reason == "protected":
        return f"protected by {d.by} ({d.pattern})"
    return f"taken over by {d.by} ({d.pattern})"
