"""Versions (SemVer 2.0.0) and npm-style version constraints (node-semver ranges).

Written here rather than taken from a semver library so that every error names the text,
the offset and what is wrong there, and so that the accepted syntax is exactly the one
documented in docs/dependencies.md. Semantics follow https://semver.org/spec/v2.0.0.html
(precedence: §11) and the range grammar and desugaring table of node-semver's README
(https://github.com/npm/node-semver#ranges), without its "loose" mode and
``includePrerelease`` option. Pure: no I/O.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from powernode.errors import VersionError

# Limits on untrusted input. node-semver caps version strings at 256 characters and
# numbers at Number.MAX_SAFE_INTEGER; we do the same so a manifest cannot make us
# build huge integers or scan megabytes.
MAX_VERSION_LENGTH = 256
MAX_CONSTRAINT_LENGTH = 1024
MAX_NUMBER = 2**53 - 1

_DIGITS = frozenset("0123456789")
_IDENT_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")
_WILDCARDS = frozenset({"x", "X", "*"})
_WORD = re.compile(r"\S+")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
# Longest first, so "<=" is not read as "<" followed by "=1.2.3".
_OPERATORS = ("<=", ">=", "~>", "<", ">", "=", "~", "^")
# A version's precedence key (see Version.__post_init__): compared as a whole.
_Key = tuple[object, ...]
_OPERATOR_FUNCTIONS: dict[str, Callable[[_Key, _Key], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
}


def _error(kind: str, src: str, offset: int, what: str) -> VersionError:
    at = repr(src[offset]) if offset < len(src) else "end of text"
    return VersionError(f"invalid {kind} {src!r}: at offset {offset} ({at}): {what}")


def _prerelease_key(ids: tuple[int | str, ...]) -> tuple[tuple[int, int, str], ...]:
    # §11.4: numeric identifiers compare numerically and sort below alphanumeric ones,
    # which compare in ASCII order; a shorter list that is a prefix sorts first.
    return tuple((0, i, "") if isinstance(i, int) else (1, 0, i) for i in ids)


@dataclass(frozen=True)
class Version:
    """A SemVer 2.0.0 version.

    ``==`` and ``hash`` compare every field, build metadata included, so that
    ``Version.parse(str(v)) == v`` is exact. ``<``, ``<=``, ``>``, ``>=`` compare
    *precedence* (§11), which ignores build metadata: ``1.0.0+a`` and ``1.0.0+b`` are
    neither ``<`` nor ``>`` each other (both ``<=``), yet not ``==``.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: tuple[str, ...] = ()
    _key: _Key = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        if min(self.major, self.minor, self.patch) < 0:
            raise VersionError(f"invalid version {self}: numbers must not be negative")
        key = (
            self.major,
            self.minor,
            self.patch,
            not self.prerelease,  # §11.3: a prerelease sorts before its release
            _prerelease_key(self.prerelease),
        )
        object.__setattr__(self, "_key", key)  # computed once: sorting is the hot path

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``[v]MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``; raise VersionError."""
        if len(text) > MAX_VERSION_LENGTH:
            raise _error("version", text, MAX_VERSION_LENGTH, "longer than the limit")
        part = _parse_partial(text, 0, len(text), "version", wild=False)
        # wild=False guarantees all three numbers are present.
        assert part.major is not None and part.minor is not None and part.patch is not None
        return cls(part.major, part.minor, part.patch, part.prerelease, part.build)

    def precedence(self) -> _Key:
        """Sort key for §11 precedence (build metadata ignored)."""
        return self._key

    # Comparisons are by precedence; == stays the dataclass's field-wise equality.
    def __lt__(self, other: object) -> bool:
        return _compare(operator.lt, self, other)

    def __le__(self, other: object) -> bool:
        return _compare(operator.le, self, other)

    def __gt__(self, other: object) -> bool:
        return _compare(operator.gt, self, other)

    def __ge__(self, other: object) -> bool:
        return _compare(operator.ge, self, other)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(i) for i in self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def _compare(op: Callable[[_Key, _Key], bool], a: Version, b: object) -> bool:
    if not isinstance(b, Version):  # no reflected operations with other types
        raise TypeError(f"cannot order Version and {type(b).__name__}")
    return bool(op(a.precedence(), b.precedence()))


@dataclass(frozen=True)
class _Partial:
    """A version as written in a range: missing or wildcard parts are None."""

    major: int | None
    minor: int | None
    patch: int | None
    prerelease: tuple[int | str, ...] = ()
    build: tuple[str, ...] = ()


def _number(src: str, a: int, b: int, kind: str, what: str) -> int:
    if a == b:
        raise _error(kind, src, a, f"expected a number for the {what} part")
    for i in range(a, b):
        if src[i] not in _DIGITS:
            if i == a:
                raise _error(kind, src, i, f"expected a number for the {what} part")
            raise _error(kind, src, i, f"unexpected character in the {what} number")
    if src[a] == "0" and b - a > 1:
        raise _error(kind, src, a, f"{what} number {src[a:b]!r} has a leading zero (SemVer §2)")
    value = int(src[a:b]) if b - a <= 16 else MAX_NUMBER + 1
    if value > MAX_NUMBER:
        raise _error(kind, src, a, f"{what} number is larger than {MAX_NUMBER}")
    return value


def _identifiers(src: str, a: int, b: int, kind: str, what: str) -> tuple[str, ...]:
    # §9/§10: dot-separated, non-empty, [0-9A-Za-z-].
    ids = []
    start = a
    for i in range(a, b + 1):
        if i == b or src[i] == ".":
            if i == start:
                raise _error(kind, src, i, f"empty {what} identifier")
            ids.append(src[start:i])
            start = i + 1
        elif src[i] not in _IDENT_CHARS:
            raise _error(kind, src, i, f"{what} identifiers may contain only 0-9, A-Z, a-z, '-'")
    return tuple(ids)


def _prerelease(src: str, a: int, b: int, kind: str) -> tuple[int | str, ...]:
    out: list[int | str] = []
    pos = a
    for ident in _identifiers(src, a, b, kind, "prerelease"):
        if all(c in _DIGITS for c in ident):
            out.append(_number(src, pos, pos + len(ident), kind, "prerelease"))
        else:
            out.append(ident)
        pos += len(ident) + 1
    return tuple(out)


def _parse_partial(src: str, a: int, b: int, kind: str, *, wild: bool) -> _Partial:
    """Parse ``src[a:b]`` as a (possibly partial, if ``wild``) version."""
    pos = a + 1 if a < b and src[a] == "v" else a
    nums: list[int | None] = []
    names = ("major", "minor", "patch")
    while True:
        end = pos
        while end < b and src[end] not in ".-+":
            end += 1
        if wild and src[pos:end] in _WILDCARDS:
            nums.append(None)
        elif wild and nums and nums[-1] is None:
            raise _error(kind, src, pos, "after a wildcard, later parts must be wildcards too")
        else:
            nums.append(_number(src, pos, end, kind, names[len(nums)]))
        pos = end
        if len(nums) == 3 or pos == b or src[pos] != ".":
            break
        pos += 1
    if len(nums) < 3 and not wild:
        raise _error(kind, src, pos, "expected MAJOR.MINOR.PATCH")
    full = len(nums) == 3 and None not in nums
    prerelease: tuple[int | str, ...] = ()
    build: tuple[str, ...] = ()
    if pos < b and src[pos] in "-+" and not full:
        raise _error(kind, src, pos, "a prerelease or build needs a full MAJOR.MINOR.PATCH")
    if pos < b and src[pos] == "-":
        end = src.find("+", pos, b)
        end = b if end < 0 else end
        prerelease = _prerelease(src, pos + 1, end, kind)
        pos = end
    if pos < b and src[pos] == "+":
        build = _identifiers(src, pos + 1, b, kind, "build")
        pos = b
    if pos < b:
        raise _error(kind, src, pos, "unexpected character after the version")
    nums += [None] * (3 - len(nums))
    return _Partial(nums[0], nums[1], nums[2], prerelease, build)


@dataclass(frozen=True)
class Comparator:
    """One primitive comparison such as ``>=1.2.3`` or ``<2.0.0-0``."""

    op: str  # one of "<", "<=", ">", ">=", "="
    version: Version

    def allows(self, v: Version) -> bool:
        return bool(_OPERATOR_FUNCTIONS[self.op](v.precedence(), self.version.precedence()))

    def __str__(self) -> str:
        return f"{'' if self.op == '=' else self.op}{self.version}"


def _v(major: int, minor: int, patch: int, pre: tuple[int | str, ...] = ()) -> Version:
    return Version(major, minor, patch, pre)


def _below(major: int, minor: int, patch: int) -> Comparator:
    # "<X.Y.Z-0": below every prerelease of X.Y.Z, as node-semver writes upper bounds.
    return Comparator("<", _v(major, minor, patch, (0,)))


_NOTHING = (_below(0, 0, 0),)


def _desugar(op: str, p: _Partial) -> tuple[Comparator, ...]:
    """Turn one ``op partial`` into primitive comparators (node-semver README table)."""
    big, minor, patch = p.major, p.minor, p.patch
    if big is None:  # "*", "x": anything, except "<*"/">*": nothing
        return _NOTHING if op in ("<", ">") else ()
    if op in ("^", "~", "~>") and minor is not None and patch is not None:
        low = Comparator(">=", Version(big, minor, patch, p.prerelease))
        if op != "^" or (big == 0 and minor != 0):
            return (low, _below(big, minor + 1, 0))
        return (low, _below(big + 1, 0, 0) if big else _below(0, 0, patch + 1))
    if op in ("^", "~", "~>"):
        if minor is None:  # ~1, ^1, ^1.x
            return (Comparator(">=", _v(big, 0, 0)), _below(big + 1, 0, 0))
        upper = _below(big + 1, 0, 0) if op == "^" and big else _below(big, minor + 1, 0)
        return (Comparator(">=", _v(big, minor, 0)), upper)
    if minor is not None and patch is not None:
        return (Comparator(op or "=", Version(big, minor, patch, p.prerelease)),)
    # A partial version with a comparison operator or none (X-range).
    if op in ("", "="):
        if minor is None:
            return (Comparator(">=", _v(big, 0, 0)), _below(big + 1, 0, 0))
        return (Comparator(">=", _v(big, minor, 0)), _below(big, minor + 1, 0))
    if op == ">":  # >1 := >=2.0.0, >1.2 := >=1.3.0
        bumped = _v(big + 1, 0, 0) if minor is None else _v(big, minor + 1, 0)
        return (Comparator(">=", bumped),)
    if op == "<=":  # <=1 := <2.0.0-0, <=1.2 := <1.3.0-0
        return (_below(big + 1, 0, 0) if minor is None else _below(big, minor + 1, 0),)
    if op == "<":
        return (_below(big, minor or 0, 0),)
    return (Comparator(">=", _v(big, minor or 0, 0)),)


def _hyphen(lo: _Partial, hi: _Partial) -> tuple[Comparator, ...]:
    # "A - B" := ">=A <=B"; a partial A fills zeros, a partial B means "below the next".
    out: list[Comparator] = []
    if lo.major is not None:
        out.append(Comparator(">=", Version(lo.major, lo.minor or 0, lo.patch or 0, lo.prerelease)))
    if hi.major is None:
        return tuple(out)
    if hi.minor is None:
        out.append(_below(hi.major + 1, 0, 0))
    elif hi.patch is None:
        out.append(_below(hi.major, hi.minor + 1, 0))
    else:
        out.append(Comparator("<=", Version(hi.major, hi.minor, hi.patch, hi.prerelease)))
    return tuple(out)


def _split_operator(word: str) -> tuple[str, int]:
    for op in _OPERATORS:
        if word.startswith(op):
            return op, len(op)
    return "", 0


def _parse_alternative(src: str, a: int, b: int, kind: str) -> tuple[Comparator, ...]:
    words = [(m.start(), m.group()) for m in _WORD.finditer(src, a, b)]
    out: list[Comparator] = []
    i = 0
    while i < len(words):
        off, word = words[i]
        if word == "-":
            raise _error(kind, src, off, "a hyphen range needs a version on both sides of ' - '")
        if i + 1 < len(words) and words[i + 1][1] == "-":
            if i + 2 >= len(words):
                raise _error(kind, src, words[i + 1][0], "a hyphen range needs a version after '-'")
            if _split_operator(word)[1]:
                raise _error(kind, src, off, "the ends of a hyphen range take no operator")
            hi_off, hi_word = words[i + 2]
            if _split_operator(hi_word)[1]:
                raise _error(kind, src, hi_off, "the ends of a hyphen range take no operator")
            lo = _parse_partial(src, off, off + len(word), kind, wild=True)
            hi = _parse_partial(src, hi_off, hi_off + len(hi_word), kind, wild=True)
            out += _hyphen(lo, hi)
            i += 3
            continue
        op, n = _split_operator(word)
        if n and n == len(word):  # ">= 1.2.3": node-semver allows space after an operator
            if i + 1 >= len(words) or words[i + 1][1] == "-":
                raise _error(kind, src, off + n, f"operator {op!r} needs a version after it")
            off, word = words[i + 1]
            n = 0
            i += 1
        p = _parse_partial(src, off + n, off + len(word), kind, wild=True)
        out += _desugar(op, p)
        i += 1
    # ">=0.0.0" allows every release and grants no prerelease exemption: it is "*".
    return tuple(c for c in out if c != Comparator(">=", _v(0, 0, 0)))


def _parse_constraint(src: str, a: int, b: int, kind: str) -> Constraint:
    if b - a > MAX_CONSTRAINT_LENGTH:
        raise _error(kind, src, a + MAX_CONSTRAINT_LENGTH, "constraint longer than the limit")
    alternatives = []
    pos = a
    while True:
        bar = src.find("||", pos, b)
        stop = b if bar < 0 else bar
        if (bar >= 0 or pos > a) and not src[pos:stop].strip():
            raise _error(kind, src, stop, "empty alternative around '||'; write * for any")
        alternatives.append(_parse_alternative(src, pos, stop, kind))
        if bar < 0:
            break
        pos = bar + 2
    return Constraint(tuple(alternatives), source=src[a:b].strip() or "*")


@dataclass(frozen=True)
class Constraint:
    """An npm-style range: alternatives (``||``) of comparator sets (space = AND).

    ``str()`` is the normalised, desugared form (``^1.2.3`` -> ``>=1.2.3 <2.0.0-0``);
    ``source`` keeps the text as written, for messages. Equality ignores ``source``.
    """

    alternatives: tuple[tuple[Comparator, ...], ...] = ((),)
    source: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse node-semver range syntax; raise VersionError naming the offset."""
        return _parse_constraint(text, 0, len(text), "constraint")

    def allows(self, version: Version) -> bool:
        return any(_set_allows(s, version) for s in self.alternatives)

    def __str__(self) -> str:
        return " || ".join(" ".join(map(str, s)) or "*" for s in self.alternatives)

    @property
    def text(self) -> str:
        """The constraint as written, or its normalised form if it was built in code."""
        return self.source or str(self)


def _set_allows(comparators: tuple[Comparator, ...], v: Version) -> bool:
    if not all(c.allows(v) for c in comparators):
        return False
    if not v.prerelease:
        return True
    # node-semver's prerelease rule: a prerelease satisfies a set only if some comparator
    # in it names a prerelease of the same MAJOR.MINOR.PATCH (opt-in per release line).
    return any(
        c.version.prerelease
        and (c.version.major, c.version.minor, c.version.patch) == (v.major, v.minor, v.patch)
        for c in comparators
    )


ANY = Constraint(((),), source="*")


@dataclass(frozen=True)
class Requirement:
    """``<owner>/<module>@<constraint>`` from a manifest's ``dependencies.requires``."""

    owner: str
    name: str
    constraint: Constraint = ANY

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return f"{self.key}@{self.constraint.text}"


def _check_slug(src: str, a: int, b: int, what: str) -> str:
    slug = src[a:b]
    if _SLUG.match(slug):
        return slug
    if not slug:
        raise _error("requirement", src, a, f"{what} is empty")
    if len(slug) > 63:
        raise _error("requirement", src, a + 63, f"{what} is longer than 63 characters")
    bad = next(
        i
        for i, c in enumerate(slug)
        if not (c.isascii() and (c.isdigit() or c.islower())) and (i == 0 or c != "-")
    )
    raise _error(
        "requirement", src, a + bad, f"{what} must be a lowercase slug (a-z, 0-9, '-' inside)"
    )


def parse_requirement(text: str) -> Requirement:
    """Parse ``"<owner>/<module>[@<constraint>]"``; no ``@`` means any version.

    Owner and module are lowercase slugs ``^[a-z0-9][a-z0-9-]{0,62}$``. Raises
    VersionError naming the text, the offset and what is wrong there.
    """
    limit = 2 * 64 + 1 + MAX_CONSTRAINT_LENGTH
    if len(text) > limit:
        raise _error("requirement", text, limit, "longer than the limit")
    slash = text.find("/")
    if slash < 0:
        at = text.find("@")
        raise _error(
            "requirement",
            text,
            len(text) if at < 0 else at,
            "expected '<owner>/<module>@<constraint>', missing '/'",
        )
    at = text.find("@", slash)
    end = len(text) if at < 0 else at
    owner = _check_slug(text, 0, slash, "owner")
    name = _check_slug(text, slash + 1, end, "module name")
    if at < 0:
        return Requirement(owner, name)
    if not text[at + 1 :].strip():
        raise _error("requirement", text, at + 1, "empty constraint after '@'; omit '@' for any")
    return Requirement(owner, name, _parse_constraint(text, at + 1, len(text), "requirement"))
