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

Artifact paths are normalised, so a ``.``, ``..`` or empty component, or a NUL,
could never match: such a pattern is refused with the offset of the component
(``GlobError.offset``) rather than accepted as a rule that silently does nothing.

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
    Token,
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


def _body_regex(tokens: Sequence[Token]) -> str:
    out = []
    for tok in tokens:
        if isinstance(tok, str):
            out.append(re.escape(tok))
        elif isinstance(tok, CharClass):
            out.append(tok.regex)
        else:
            out.append("[^/]*" if tok is STAR else ".*")
    return "".join(out)


def _tail_regexes(parsed: ParsedPattern, skip: int = 0) -> tuple[str | None, str]:
    """(regex for files or None, regex for directories) of ``tokens[skip:]``.

    Both match a path without its trailing ``/``. Unanchored patterns get no
    prefix here: callers put ``.*/`` in front, which makes the match start
    right after some ``/`` of the absolute path, rsync's "end of the
    pathname, at a component boundary".
    """
    body = _body_regex(parsed.tokens[skip:])
    if parsed.triple:
        # "dir/***": everything under dir (files and dirs), and dir itself.
        return body + "/.*", body + "(?:/.*)?"
    if parsed.dir_only:
        return None, body
    return body, body


def _regexes(parsed: ParsedPattern) -> tuple[str | None, str]:
    """Whole-path regexes (files or None, directories) for one pattern."""
    file_rx, dir_rx = _tail_regexes(parsed)
    prefix = "" if parsed.anchored else ".*/"
    return (None if file_rx is None else prefix + file_rx), prefix + dir_rx


def _literal(parsed: ParsedPattern) -> str | None:
    """The one path an anchored pattern without wildcards names, else None."""
    if not parsed.anchored or parsed.triple:
        return None
    if all(isinstance(t, str) for t in parsed.tokens):
        return "".join(t for t in parsed.tokens if isinstance(t, str))
    return None


def _first_component(parsed: ParsedPattern) -> int:
    """Tokens in a literal ``/name/`` prefix of an anchored pattern (0 if none)."""
    toks = parsed.tokens
    if not parsed.anchored:
        return 0
    for k in range(1, len(toks) - 1):
        t = toks[k]
        if t == "/":
            return k + 1 if k > 1 else 0
        if not isinstance(t, str):
            return 0
    return 0


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
    """Any-of many patterns: a dict for literal paths, one joined regex for the rest.

    Each regex alternative is a named group ``g<index>`` so :meth:`find` can
    say which pattern matched without a per-pattern loop. Python's ``re``
    tries alternatives one by one, so the join is shaped to fail fast:
    anchored literals (``/etc/shadow``, the common protected pattern) are a
    dict lookup; other anchored patterns are grouped under their literal
    first component (``/usr/(?:...)``); unanchored ones share one ``.*/``
    prefix instead of each rescanning the path.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        parsed = [parse_pattern(p) for p in self.patterns]
        self._lit_files: dict[str, int] = {}
        self._lit_dirs: dict[str, int] = {}  # keys in list form, "/etc/x/"
        rest: list[tuple[int, ParsedPattern]] = []
        for i, pp in enumerate(parsed):
            lit = _literal(pp)
            if lit is None:
                rest.append((i, pp))
                continue
            if not pp.dir_only:
                self._lit_files.setdefault(lit, i)
            self._lit_dirs.setdefault(lit + "/", i)
        self._file_re = self._join(rest, files=True)
        self._dir_re = self._join(rest, files=False)

    @staticmethod
    def _join(
        parsed: Sequence[tuple[int, ParsedPattern]], *, files: bool
    ) -> re.Pattern[str] | None:
        grouped: dict[str, list[str]] = {}
        floating: list[str] = []
        for i, pp in parsed:
            skip = _first_component(pp)
            file_rx, dir_rx = _tail_regexes(pp, skip)
            rx = file_rx if files else dir_rx
            if rx is None:
                continue
            alt = f"(?P<g{i}>{rx})"
            if pp.anchored:
                key = "".join(t for t in pp.tokens[:skip] if isinstance(t, str))
                grouped.setdefault(key, []).append(alt)
            else:
                floating.append(alt)
        alts = [re.escape(key) + "(?:" + "|".join(a) + ")" for key, a in grouped.items()]
        if floating:
            alts.append(".*/(?:" + "|".join(floating) + ")")
        if not alts:
            return None
        suffix = "" if files else "/"
        # Directories are matched in their list form "/etc/nginx/": the final
        # "/" is outside every alternative, so "**" cannot swallow it.
        return re.compile("(?:" + "|".join(alts) + ")" + suffix, _FLAGS)

    @cached_property
    def globs(self) -> tuple[Glob, ...]:
        """Each pattern compiled alone (only :meth:`which` needs them)."""
        return tuple(Glob.compile(p) for p in self.patterns)

    def __len__(self) -> int:
        return len(self.patterns)

    def _find(self, subject: str) -> int | None:
        """Index of a matching pattern for a list-form path (dirs end with "/")."""
        if len(subject) > 1 and subject[-1] == "/":
            lit, rx = self._lit_dirs, self._dir_re
        else:
            lit, rx = self._lit_files, self._file_re
        k = lit.get(subject)
        if k is not None:
            return k
        m = rx.fullmatch(subject) if rx is not None else None
        if m is None or m.lastgroup is None:
            return None
        return int(m.lastgroup[1:])

    @staticmethod
    def _subject(path: str, is_dir: bool) -> str:
        _check_path(path)
        if is_dir and not path.endswith("/"):
            return path + "/"
        return path

    def matches(self, path: str, is_dir: bool = False) -> bool:
        """Whether any pattern matches ``path``."""
        return self._find(self._subject(path, is_dir)) is not None

    def find(self, path: str, is_dir: bool = False) -> int | None:
        """Index of one pattern matching ``path`` (always the same one), or None."""
        return self._find(self._subject(path, is_dir))

    def which(self, path: str, is_dir: bool = False) -> list[int]:
        """Indices of every pattern matching ``path`` (a loop: use on few paths)."""
        return [i for i, g in enumerate(self.globs) if g.matches(path, is_dir)]

    def matching(self, paths: Iterable[str]) -> list[str]:
        """The paths (directories written with a trailing ``/``) any pattern matches."""
        find = self._find
        return [p for p in paths if find(p) is not None]

    def find_many(self, paths: Iterable[str]) -> dict[str, int]:
        """``{path: index of one matching pattern}`` for the paths any pattern matches."""
        # _find() inlined: this loop runs once per path of a composition.
        lit_f, lit_d = self._lit_files.get, self._lit_dirs.get
        rx_f = self._file_re.fullmatch if self._file_re is not None else None
        rx_d = self._dir_re.fullmatch if self._dir_re is not None else None
        out: dict[str, int] = {}
        for p in paths:
            if p[-1] == "/" and len(p) > 1:
                k, rx = lit_d(p), rx_d
            else:
                k, rx = lit_f(p), rx_f
            if k is None and rx is not None:
                m = rx(p)
                if m is not None and m.lastgroup is not None:
                    k = int(m.lastgroup[1:])
            if k is not None:
                out[p] = k
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
