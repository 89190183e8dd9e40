"""Parsing rsync-style glob patterns into tokens (see ``core.globs`` for the rules).

Kept apart from the compiler so the validation rules, and the offsets they
report, live in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from powernode.errors import GlobError

MAX_PATTERN_CHARS: Final = 4096


class _Star:
    """``*``: any run of characters except ``/``."""

    def __repr__(self) -> str:
        return "STAR"


class _DoubleStar:
    """``**``: anything, ``/`` included."""

    def __repr__(self) -> str:
        return "DSTAR"


STAR: Final = _Star()
DSTAR: Final = _DoubleStar()


@dataclass(frozen=True)
class CharClass:
    """One character (never ``/``) from a set; ``regex`` is its translation."""

    regex: str


QMARK: Final = CharClass("[^/]")

Token = str | _Star | _DoubleStar | CharClass

# POSIX classes in the C locale (rsync's wildmatch uses the ctype macros).
_POSIX: Final[dict[str, str]] = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}


@dataclass(frozen=True)
class ParsedPattern:
    """A pattern as tokens, with the trailing ``/`` or ``/***`` taken off."""

    pattern: str
    tokens: tuple[Token, ...]
    anchored: bool  # starts with "/": matched from the artifact root
    dir_only: bool  # ended with "/": matches directories only
    triple: bool  # ended with "/***": the directory itself and everything under it


def _fail(pattern: str, offset: int, what: str) -> GlobError:
    shown = pattern if len(pattern) <= 200 else pattern[:200] + "..."
    return GlobError(f"glob {shown!r} at offset {offset}: {what}", offset=offset)


def _parse_class(pattern: str, start: int) -> tuple[CharClass, int]:
    """Parse ``[...]`` starting at ``start`` (the ``[``); return it and the next offset."""
    n = len(pattern)
    i = start + 1
    negated = i < n and pattern[i] in "!^"
    if negated:
        i += 1
    items: list[str] = []
    first = True
    while True:
        if i >= n:
            raise _fail(pattern, start, "'[' has no closing ']' (write '\\[' for a literal '[')")
        c = pattern[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end != -1:
                name = pattern[i + 2 : end]
                if name not in _POSIX:
                    known = ", ".join(sorted(_POSIX))
                    raise _fail(pattern, i, f"unknown class [:{name}:] (known: {known})")
                items.append(_POSIX[name])
                i = end + 2
                continue
        if c == "\\":
            if i + 1 >= n:
                raise _fail(pattern, i, "lone '\\' at the end (write '\\\\' for a backslash)")
            c = pattern[i + 1]
            i += 1
        lo = c
        i += 1
        # "a-z" is a range unless the "-" is last before "]".
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            hi = pattern[i + 1]
            hi_at = i + 1
            if hi == "\\":
                if i + 2 >= n:
                    raise _fail(pattern, i + 1, "lone '\\' at the end")
                hi = pattern[i + 2]
                hi_at = i + 2
            if ord(hi) < ord(lo):
                raise _fail(pattern, i - 1, f"range {lo}-{hi} is reversed")
            items.append(re.escape(lo) + "-" + re.escape(hi))
            i = hi_at + 1
        else:
            items.append(re.escape(lo))
    body = "".join(items)
    if negated:
        return CharClass(f"[^{body}/]"), i
    # A class never matches "/": it stands for one character of a component.
    return CharClass(f"(?!/)[{body}]"), i


def _tokenize(pattern: str) -> tuple[list[Token], list[int], bool]:
    """Tokens, the offset of each, and whether the pattern ends in ``/***``."""
    toks: list[Token] = []
    offs: list[int] = []
    n = len(pattern)
    i = 0
    triple = False
    while i < n:
        c = pattern[i]
        at = i
        if c == "\\":
            if i + 1 >= n:
                raise _fail(pattern, i, "lone '\\' at the end (write '\\\\' for a backslash)")
            toks.append(pattern[i + 1])
            i += 2
        elif c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            run = j - i
            if run == 3 and j == n and toks and toks[-1] == "/":
                triple = True
            else:
                toks.append(STAR if run == 1 else DSTAR)
            i = j
        elif c == "?":
            toks.append(QMARK)
            i += 1
        elif c == "[":
            cls, i = _parse_class(pattern, i)
            toks.append(cls)
        else:
            toks.append(c)
            i += 1
        if not triple:
            offs.append(at)
    return toks, offs, triple


def _refuse_dot_components(pattern: str, toks: list[Token], offs: list[int]) -> None:
    """Refuse a ``.`` or ``..`` component: artifact paths are normalised, so it never matches.

    ``etc/../../root/.ssh/**`` reads as "/root/.ssh" to a person but matches nothing; the
    author should hear that rather than ship a rule that silently does nothing. Only a
    component made of literal characters counts (``\\.`` is a literal ``.`` too); ``.*``
    or ``..?`` hold a wildcard and can match real names.
    """
    start = 0
    for k in range(len(toks) + 1):
        if k < len(toks) and toks[k] != "/":
            continue
        seg = toks[start:k]
        if seg and all(isinstance(t, str) for t in seg):
            text = "".join(t for t in seg if isinstance(t, str))
            if text in (".", ".."):
                raise _fail(
                    pattern,
                    offs[start],
                    f"path component {text!r} (artifact paths are normalised, so it can "
                    "never match; write the path it stands for)",
                )
        start = k + 1


def validate_pattern(pattern: str) -> None:
    """Raise :class:`GlobError` (naming the pattern and offset) unless ``pattern`` is valid."""
    parse_pattern(pattern)


@lru_cache(maxsize=4096)
def parse_pattern(pattern: str) -> ParsedPattern:
    """Tokens of ``pattern``; raises :class:`GlobError` when it is not valid."""
    if not pattern:
        raise GlobError("glob '' at offset 0: empty pattern (a pattern must name a path)")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _fail(pattern, MAX_PATTERN_CHARS, f"longer than {MAX_PATTERN_CHARS} characters")
    nul = pattern.find("\0")
    if nul != -1:
        raise _fail(pattern, nul, "NUL character (paths cannot hold one)")
    toks, offs, triple = _tokenize(pattern)
    for k in range(1, len(toks)):
        if toks[k] == "/" and toks[k - 1] == "/":
            raise _fail(pattern, offs[k], "empty path component '//' (it can never match)")
    _refuse_dot_components(pattern, toks, offs)
    if toks == ["/"] and not triple:
        raise _fail(pattern, 0, "'/' names the artifact root itself; name paths under it")
    anchored = toks[0] == "/"
    if triple:
        toks.pop()  # the "/" before "***"
    dir_only = not triple and toks[-1] == "/"
    if dir_only:
        toks.pop()
    return ParsedPattern(pattern, tuple(toks), anchored, dir_only, triple)
