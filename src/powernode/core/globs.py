"""rsync-style globs over artifact paths, compiled to regular expressions.

Paths are artifact-root-relative absolute paths: ``/etc/nginx/nginx.conf``.
Where a list holds both kinds, directories end with ``/`` (``/etc/nginx/``);
single calls may instead pass ``is_dir=True``.

The rules follow rsync(1), "INCLUDE/EXCLUDE PATTERN RULES":

- ``*`` matches any run of characters except ``/``; ``**`` (or more stars)
  matches anything including ``/``; ``?`` matches one character except ``/``;
  ``[...]`` matches one character from a class (``[!...]``/``[^...]``
  negates; ranges ``a-z``; POSIX ``[:alpha:]``...). A class never matches
  ``/``: like ``?`` it stands for one character of a path component.
- A pattern starting with ``/`` is anchored at the artifact root. Any other
  pattern is matched against the end of the path at a component boundary,
  so one with no ``/`` (ignoring a trailing one) and no ``**`` matches the
  final component at any depth.
- A trailing ``/`` matches directories only. A trailing ``dir/***`` matches
  ``dir`` itself (as ``dir/``) and everything under it (as ``dir/**``).

One deliberate difference: rsync treats ``\\`` as literal in a pattern with
no wildcard. Here ``\\`` always escapes the next character, so adding a
``*`` elsewhere in a pattern never changes what its other characters mean.

Compiled patterns never backtrack into user-controlled recursion: each
pattern becomes one regular expression, and a :class:`GlobSet` joins many
into one alternation so a bulk filter is one regex call per path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from powernode.core.globparse import (
    STAR,
    CharClass,
    ParsedPattern,
    parse_pattern,
    validate_pattern,
)
from powernode.errors import GlobError

__all__ = [
    "Glob",
    "GlobSet",
    "RuleList",
    "select",
    "split_dir",
    "validate_pattern",
    "with_parents",
]

_FLAGS = re.DOTALL  # artifact paths may hold a newline; ``**`` must still cross it


def split_dir(path: str, is_dir: bool = False) -> tuple[str, bool]:
    """``("/etc/nginx", True)`` for ``"/etc/nginx/"``; other paths unchanged."""
    if len(path) > 1 and path.endswith("/"):
        return path[:-1], True
    return path, is_dir


def _body_regex(parsed: ParsedPattern) -> str:
    out = []
    for tok in parsed.tokens:
        if isinstance(tok, str):
            out.append(re.escape(tok))
        elif isinstance(tok, CharClass):
            out.append(tok.regex)
        else:
            out.append("[^/]*" if tok is STAR else ".*")
    return "".join(out)


def _regexes(parsed: ParsedPattern) -> tuple[str | None, str]:
    """(regex for files or None, regex for directories), no anchors.

    Both match the whole path without a trailing ``/``. The unanchored prefix
    ``.*/`` makes the match start right after some ``/`` of the absolute path,
    which is rsync's "end of the pathname, at a component boundary".
    """
    body = _body_regex(parsed)
    prefix = "" if parsed.anchored else ".*/"
    if parsed.triple:
        # "dir/***": everything under dir (files and dirs), and dir itself.
        return prefix + body + "/.*", prefix + body + "(?:/.*)?"
    if parsed.dir_only:
        return None, prefix + body
    return prefix + body, prefix + body


@dataclass(frozen=True)
class Glob:
    """One compiled pattern."""

    pattern: str
    anchored: bool
    dir_only: bool
    _file_re: re.Pattern[str] | None = field(repr=False, compare=False)
    _dir_re: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        """Compile ``pattern``; raises :class:`GlobError` when it is not valid."""
        parsed = parse_pattern(pattern)
        file_rx, dir_rx = _regexes(parsed)
        return cls(
            pattern=pattern,
            anchored=parsed.anchored,
            dir_only=parsed.dir_only,
            _file_re=re.compile(file_rx, _FLAGS) if file_rx is not None else None,
            _dir_re=re.compile(dir_rx, _FLAGS),
        )

    def matches(self, path: str, is_dir: bool = False) -> bool:
        """Whether ``path`` (a directory when it ends with ``/`` or ``is_dir``) matches."""
        _check_path(path)
        p, d = split_dir(path, is_dir)
        if d:
            return self._dir_re.fullmatch(p) is not None
        return self._file_re is not None and self._file_re.fullmatch(p) is not None


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"artifact path {path!r} must start with '/'")


class GlobSet:
    """Any-of many patterns, joined into one regex per kind (files, directories).

    Each pattern gets a named group ``g<index>`` so :meth:`find` can say which
    pattern matched without a per-pattern loop. Unanchored patterns share one
    ``.*/`` prefix: otherwise every unanchored alternative would rescan the
    path from its start.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.globs: tuple[Glob, ...] = tuple(Glob.compile(p) for p in self.patterns)
        parsed = [parse_pattern(p) for p in self.patterns]
        self._file_re = self._join(parsed, files=True)
        self._dir_re = self._join(parsed, files=False)

    @staticmethod
    def _join(parsed: Sequence[ParsedPattern], *, files: bool) -> re.Pattern[str] | None:
        anchored: list[str] = []
        floating: list[str] = []
        for i, pp in enumerate(parsed):
            file_rx, dir_rx = _regexes(pp)
            rx = file_rx if files else dir_rx
            if rx is None:
                continue
            if pp.anchored:
                anchored.append(f"(?P<g{i}>{rx})")
            else:
                floating.append(f"(?P<g{i}>{rx[len('.*/') :]})")
        alts = list(anchored)
        if floating:
            alts.append(".*/(?:" + "|".join(floating) + ")")
        if not alts:
            return None
        suffix = "" if files else "/"
        # Directories are matched in their list form "/etc/nginx/": the final
        # "/" is outside every alternative, so "**" cannot swallow it.
        return re.compile("(?:" + "|".join(alts) + ")" + suffix, _FLAGS)

    def __len__(self) -> int:
        return len(self.patterns)

    def _regex_for(self, path: str, is_dir: bool) -> tuple[re.Pattern[str] | None, str]:
        _check_path(path)
        if len(path) > 1 and path.endswith("/"):
            return self._dir_re, path
        if is_dir:
            return self._dir_re, path + "/"
        return self._file_re, path

    def matches(self, path: str, is_dir: bool = False) -> bool:
        """Whether any pattern matches ``path``."""
        rx, subject = self._regex_for(path, is_dir)
        return rx is not None and rx.fullmatch(subject) is not None

    def find(self, path: str, is_dir: bool = False) -> int | None:
        """Index of one pattern matching ``path`` (always the same one), or None."""
        rx, subject = self._regex_for(path, is_dir)
        m = rx.fullmatch(subject) if rx is not None else None
        if m is None or m.lastgroup is None:
            return None
        return int(m.lastgroup[1:])

    def which(self, path: str, is_dir: bool = False) -> list[int]:
        """Indices of every pattern matching ``path`` (a loop: use on few paths)."""
        return [i for i, g in enumerate(self.globs) if g.matches(path, is_dir)]

    def matching(self, paths: Iterable[str]) -> list[str]:
        """The paths (directories written with a trailing ``/``) any pattern matches."""
        fre = self._file_re.fullmatch if self._file_re is not None else None
        dre = self._dir_re.fullmatch if self._dir_re is not None else None
        out = []
        for p in paths:
            rx = dre if p.endswith("/") and len(p) > 1 else fre
            if rx is not None and rx(p) is not None:
                out.append(p)
        return out

    def find_many(self, paths: Iterable[str]) -> dict[str, int]:
        """``{path: index of one matching pattern}`` for the paths any pattern matches."""
        fre = self._file_re.fullmatch if self._file_re is not None else None
        dre = self._dir_re.fullmatch if self._dir_re is not None else None
        out: dict[str, int] = {}
        for p in paths:
            rx = dre if p.endswith("/") and len(p) > 1 else fre
            m = rx(p) if rx is not None else None
            if m is not None and m.lastgroup is not None:
                out[p] = int(m.lastgroup[1:])
        return out

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"


@dataclass(frozen=True)
class Rule:
    """One filter rule: include (``+``) or exclude (``-``) what ``glob`` matches."""

    include: bool
    glob: Glob


class RuleList:
    """Ordered include/exclude rules; the first rule that matches decides (rsync).

    Rules are written ``"+ pattern"`` or ``"- pattern"`` (one space, as rsync's
    short filter-rule form).
    """

    def __init__(self, rules: Iterable[str]) -> None:
        parsed: list[Rule] = []
        for n, text in enumerate(rules):
            if len(text) < 3 or text[0] not in "+-" or text[1] != " ":
                raise GlobError(
                    f"rule {n}: {text!r}: expected '+ PATTERN' or '- PATTERN' "
                    "(a sign, one space, the pattern)"
                )
            parsed.append(Rule(include=text[0] == "+", glob=Glob.compile(text[2:])))
        self.rules: tuple[Rule, ...] = tuple(parsed)

    @cached_property
    def _set(self) -> GlobSet:
        return GlobSet(r.glob.pattern for r in self.rules)

    def decide(self, path: str, is_dir: bool = False) -> bool | None:
        """True (include), False (exclude), or None when no rule matches."""
        # The joined regex reports the first matching alternative in order
        # for anchored patterns only, so find the first rule by hand once the
        # cheap any-match says one exists.
        if not self._set.matches(path, is_dir):
            return None
        for rule in self.rules:
            if rule.glob.matches(path, is_dir):
                return rule.include
        return None  # pragma: no cover - the set said one matches


def select(paths: Iterable[str], file_spec: Sequence[str], mask: Sequence[str]) -> list[str]:
    """What a module ships: paths matching any ``file_spec`` pattern and no ``mask`` one.

    Directories are written with a trailing ``/``. Parents of selected paths
    are NOT added here (``/etc/nginx/**`` does not match ``/etc/nginx/``); call
    :func:`with_parents` for a tree that can be written as an image.
    Order of ``paths`` is kept.
    """
    inc = GlobSet(file_spec)
    chosen = inc.matching(paths)
    if not mask:
        return chosen
    exc = GlobSet(mask)
    excluded = set(exc.matching(chosen))
    return [p for p in chosen if p not in excluded]


def with_parents(paths: Iterable[str]) -> list[str]:
    """``paths`` plus every parent directory (``/etc/``, ``/etc/nginx/``), sorted.

    The root ``/`` itself is not added: every image has it.
    """
    out = set()
    walked: set[str] = set()  # parents whose own parents are already in ``out``
    for p in paths:
        out.add(p)
        end = p.rfind("/", 0, len(p) - 1)
        while end > 0:
            parent = p[: end + 1]
            if parent in walked:
                break
            walked.add(parent)
            out.add(parent)
            end = p.rfind("/", 0, end)
    return sorted(out)
