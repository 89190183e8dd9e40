"""Versions, npm-style constraints and manifest requirements (core/semver.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.core.semver import (
    ANY,
    MAX_CONSTRAINT_LENGTH,
    MAX_NUMBER,
    MAX_VERSION_LENGTH,
    Constraint,
    Requirement,
    Version,
    parse_requirement,
)
from powernode.errors import VersionError

# --- Version -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("1.2.3", (1, 2, 3, (), ())),
        ("v1.2.3", (1, 2, 3, (), ())),
        ("0.0.0", (0, 0, 0, (), ())),
        ("1.0.0-alpha.1", (1, 0, 0, ("alpha", 1), ())),
        ("1.0.0-0.3.7", (1, 0, 0, (0, 3, 7), ())),
        ("1.0.0-x-y-z.--", (1, 0, 0, ("x-y-z", "--"), ())),
        ("1.0.0+20130313144700", (1, 0, 0, (), ("20130313144700",))),
        ("1.0.0-beta+exp.sha.5114f85", (1, 0, 0, ("beta",), ("exp", "sha", "5114f85"))),
        ("1.0.0+001", (1, 0, 0, (), ("001",))),  # §10: leading zeros fine in build
        ("1.0.0-alpha0.0a", (1, 0, 0, ("alpha0", "0a"), ())),
    ],
)
def test_version_parse(text: str, fields: tuple[object, ...]) -> None:
    v = Version.parse(text)
    assert (v.major, v.minor, v.patch, v.prerelease, v.build) == fields
    assert str(v) == text.removeprefix("v")


@pytest.mark.parametrize(
    ("text", "offset", "what"),
    [
        ("1.2", 3, "expected MAJOR.MINOR.PATCH"),
        ("1.2.3.4", 5, "unexpected character after the version"),
        ("01.2.3", 0, "major number '01' has a leading zero"),
        ("1.02.3", 2, "minor number '02' has a leading zero"),
        ("1.2.3-01", 6, "prerelease number '01' has a leading zero"),
        ("1.2.3-", 6, "empty prerelease identifier"),
        ("1.2.3-a..b", 8, "empty prerelease identifier"),
        ("1.2.3+", 6, "empty build identifier"),
        ("1.2.3-a_b", 7, "prerelease identifiers may contain only"),
        ("1.2.3+a!", 7, "build identifiers may contain only"),
        ("1.x.3", 2, "expected a number for the minor part"),
        ("a.b.c", 0, "expected a number for the major part"),
        ("", 0, "expected a number for the major part"),
        (" 1.2.3", 0, "expected a number for the major part"),
        ("1.2.3 ", 5, "unexpected character in the patch number"),
        ("V1.2.3", 0, "expected a number"),
        ("1.2.٣", 4, "expected a number for the patch part"),  # non-ASCII digit
        ("1.2.99999999999999999", 4, f"larger than {MAX_NUMBER}"),
    ],
)
def test_version_parse_errors(text: str, offset: int, what: str) -> None:
    with pytest.raises(VersionError) as info:
        Version.parse(text)
    message = str(info.value)
    assert message.startswith(f"invalid version {text!r}: at offset {offset} ")
    assert what in message


def test_version_length_limit() -> None:
    with pytest.raises(VersionError, match="longer than the limit"):
        Version.parse("1.2.3-" + "a" * MAX_VERSION_LENGTH)


def test_version_negative_rejected() -> None:
    with pytest.raises(VersionError, match="must not be negative"):
        Version(1, -1, 0)


def test_semver_spec_precedence_example() -> None:
    # SemVer 2.0.0 §11.4 example, in ascending order.
    texts = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1-0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
    ]
    versions = [Version.parse(t) for t in texts]
    assert sorted(reversed(versions)) == versions
    for low, high in itertools.pairwise(versions):
        assert low < high
        assert high > low
        assert low <= high
        assert not high <= low


def test_build_metadata_ignored_for_order_but_not_equality() -> None:
    a, b = Version.parse("1.0.0+a"), Version.parse("1.0.0+b")
    assert not a < b
    assert not b < a
    assert a <= b
    assert b >= a
    assert a != b
    assert a.precedence() == b.precedence()


def test_version_compares_only_with_versions() -> None:
    with pytest.raises(TypeError):
        assert Version(1, 0, 0) < "1.0.1"  # type: ignore[operator]


# --- Constraint: node-semver README desugaring table -----------------------------------------

DESUGAR = [
    # X-ranges and partials
    ("*", "*"),
    ("", "*"),
    ("x", "*"),
    ("X", "*"),
    ("1.x", ">=1.0.0 <2.0.0-0"),
    ("1.2.x", ">=1.2.0 <1.3.0-0"),
    ("1.2.*", ">=1.2.0 <1.3.0-0"),
    ("1.X.x", ">=1.0.0 <2.0.0-0"),
    ("1", ">=1.0.0 <2.0.0-0"),
    ("1.2", ">=1.2.0 <1.3.0-0"),
    ("=1.2", ">=1.2.0 <1.3.0-0"),
    ("v1.2", ">=1.2.0 <1.3.0-0"),
    # exact and comparators
    ("1.2.3", "1.2.3"),
    ("=1.2.3", "1.2.3"),
    ("v1.2.3", "1.2.3"),
    ("1.2.3+build", "1.2.3"),
    (">1.2.3", ">1.2.3"),
    (">=1.2.3", ">=1.2.3"),
    ("<1.2.3", "<1.2.3"),
    ("<=1.2.3-rc.1", "<=1.2.3-rc.1"),
    (">= 1.2.3", ">=1.2.3"),
    (">1", ">=2.0.0"),
    (">1.2", ">=1.3.0"),
    (">=1.2", ">=1.2.0"),
    ("<1.2", "<1.2.0-0"),
    ("<=1.2", "<1.3.0-0"),
    ("<=1", "<2.0.0-0"),
    ("<*", "<0.0.0-0"),
    (">*", "<0.0.0-0"),
    (">=*", "*"),
    # hyphen ranges
    ("1.2.3 - 2.3.4", ">=1.2.3 <=2.3.4"),
    ("1.2 - 2.3.4", ">=1.2.0 <=2.3.4"),
    ("1.2.3 - 2.3", ">=1.2.3 <2.4.0-0"),
    ("1.2.3 - 2", ">=1.2.3 <3.0.0-0"),
    ("* - 2.0.0", "<=2.0.0"),
    ("1.2.3 - *", ">=1.2.3"),
    # tilde
    ("~1.2.3", ">=1.2.3 <1.3.0-0"),
    ("~1.2", ">=1.2.0 <1.3.0-0"),
    ("~1", ">=1.0.0 <2.0.0-0"),
    ("~0.2.3", ">=0.2.3 <0.3.0-0"),
    ("~0.2", ">=0.2.0 <0.3.0-0"),
    ("~0", "<1.0.0-0"),
    ("~1.2.3-beta.2", ">=1.2.3-beta.2 <1.3.0-0"),
    ("~>1.2.3", ">=1.2.3 <1.3.0-0"),
    ("~ 1.2.3", ">=1.2.3 <1.3.0-0"),
    # caret
    ("^1.2.3", ">=1.2.3 <2.0.0-0"),
    ("^0.2.3", ">=0.2.3 <0.3.0-0"),
    ("^0.0.3", ">=0.0.3 <0.0.4-0"),
    ("^1.2.3-beta.2", ">=1.2.3-beta.2 <2.0.0-0"),
    ("^0.0.3-beta", ">=0.0.3-beta <0.0.4-0"),
    ("^1.2.x", ">=1.2.0 <2.0.0-0"),
    ("^1.2", ">=1.2.0 <2.0.0-0"),
    ("^0.2", ">=0.2.0 <0.3.0-0"),
    ("^0.0.x", "<0.1.0-0"),
    ("^0.0", "<0.1.0-0"),
    ("^1.x", ">=1.0.0 <2.0.0-0"),
    ("^0.x", "<1.0.0-0"),
    ("^1", ">=1.0.0 <2.0.0-0"),
    # AND / OR
    (">=1.2.7 <1.3.0", ">=1.2.7 <1.3.0"),
    ("1.2.7 || >=1.2.9 <2.0.0", "1.2.7 || >=1.2.9 <2.0.0"),
    ("^1 || ^2", ">=1.0.0 <2.0.0-0 || >=2.0.0 <3.0.0-0"),
    ("  ^1   ||   *  ", ">=1.0.0 <2.0.0-0 || *"),
]


@pytest.mark.parametrize(("text", "normal"), DESUGAR, ids=[t or "empty" for t, _ in DESUGAR])
def test_constraint_desugars_like_node_semver(text: str, normal: str) -> None:
    c = Constraint.parse(text)
    assert str(c) == normal
    assert Constraint.parse(str(c)) == c
    assert c.text == (text.strip() or "*")


ALLOWS = [
    # (constraint, version, allowed) — examples from the node-semver README and SemVer
    ("^1.2.3", "1.2.3", True),
    ("^1.2.3", "1.9.9", True),
    ("^1.2.3", "2.0.0", False),
    ("^1.2.3", "2.0.0-0", False),
    ("^1.2.3", "1.2.2", False),
    ("^0.2.3", "0.2.9", True),
    ("^0.2.3", "0.3.0", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("~1.2", "1.2.99", True),
    ("~1.2", "1.3.0", False),
    ("1.2.3 - 2.3.4", "2.3.4", True),
    ("1.2.3 - 2.3.4", "2.3.5", False),
    ("1.2.3 - 2.3", "2.3.99", True),
    ("*", "0.0.0", True),
    ("*", "99.0.0", True),
    ("<*", "0.0.0", False),
    # prerelease rule: only when a comparator names a prerelease of the same tuple
    (">1.2.3-alpha.3", "1.2.3-alpha.7", True),
    (">1.2.3-alpha.3", "3.4.5-alpha.9", False),
    (">1.2.3-alpha.3", "3.4.5", True),
    ("^1.2.3-beta.2", "1.2.3-beta.4", True),
    ("^1.2.3-beta.2", "1.2.4-beta.2", False),
    ("^1.2.3", "1.5.0-rc.1", False),
    ("*", "1.0.0-rc.1", False),
    ("1.0.0-rc.1", "1.0.0-rc.1", True),
    ("1.0.0-rc.1 || ^2", "2.1.0-rc.1", False),
    ("1.0.0-rc.1 || ^2", "1.0.0-rc.1", True),
    ("<2.0.0", "2.0.0-rc.1", False),
    # build metadata ignored when matching
    ("1.2.3", "1.2.3+build.5", True),
    ("1.2.3+other", "1.2.3+build.5", True),
]


@pytest.mark.parametrize(("text", "version", "allowed"), ALLOWS)
def test_constraint_allows(text: str, version: str, allowed: bool) -> None:
    assert Constraint.parse(text).allows(Version.parse(version)) is allowed


@pytest.mark.parametrize(
    ("text", "offset", "what"),
    [
        ("1.2.3 -", 6, "a hyphen range needs a version after '-'"),
        ("- 1.2.3", 0, "needs a version on both sides"),
        (">=1.2.3 - 2", 0, "the ends of a hyphen range take no operator"),
        ("1.2.3 - ^2", 8, "the ends of a hyphen range take no operator"),
        (">=", 2, "operator '>=' needs a version after it"),
        ("^1 ||", 5, "empty alternative"),
        ("|| ^1", 0, "empty alternative"),
        ("^1 || || ^2", 6, "empty alternative"),
        ("1.x.3", 4, "after a wildcard, later parts must be wildcards too"),
        ("1.2-beta", 3, "a prerelease or build needs a full MAJOR.MINOR.PATCH"),
        ("1.2.x-beta", 5, "a prerelease or build needs a full"),
        ("^1.02", 3, "leading zero"),
        ("!1.2.3", 0, "expected a number for the major part"),
        ("1.2.3 | 2", 6, "expected a number"),
        ("1.2.3.4", 5, "unexpected character after the version"),
    ],
)
def test_constraint_errors_name_offset(text: str, offset: int, what: str) -> None:
    with pytest.raises(VersionError) as info:
        Constraint.parse(text)
    message = str(info.value)
    assert message.startswith(f"invalid constraint {text!r}: at offset {offset} ")
    assert what in message


def test_constraint_length_limit() -> None:
    text = " ".join(["^1"] * MAX_CONSTRAINT_LENGTH)
    with pytest.raises(VersionError, match="longer than the limit"):
        Constraint.parse(text)


def test_constraint_equality_ignores_source() -> None:
    assert Constraint.parse("^1.2.3") == Constraint.parse(">=1.2.3 <2.0.0-0")
    assert Constraint.parse("*") == ANY
    assert Constraint.parse(">=0.0.0") == ANY


# --- Requirement ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "owner", "name", "normal"),
    [
        ("powernode/system-base@^1.0", "powernode", "system-base", ">=1.0.0 <2.0.0-0"),
        ("acme/my-redis", "acme", "my-redis", "*"),
        ("a/b@*", "a", "b", "*"),
        ("0x/9-9@>=1.2.3 <2 || 3.x", "0x", "9-9", ">=1.2.3 <2.0.0-0 || >=3.0.0 <4.0.0-0"),
        ("o/" + "n" * 63 + "@1", "o", "n" * 63, ">=1.0.0 <2.0.0-0"),
    ],
)
def test_parse_requirement(text: str, owner: str, name: str, normal: str) -> None:
    r = parse_requirement(text)
    assert (r.owner, r.name, str(r.constraint)) == (owner, name, normal)
    assert r.key == f"{owner}/{name}"
    assert str(r) == (text if "@" in text else text + "@*")
    assert parse_requirement(str(r)) == r


@pytest.mark.parametrize(
    ("text", "offset", "what"),
    [
        ("acme", 4, "missing '/'"),
        ("acme@1", 4, "missing '/'"),
        ("/x@1", 0, "owner is empty"),
        ("acme/@1", 5, "module name is empty"),
        ("Acme/x", 0, "owner must be a lowercase slug"),
        ("acme/My-redis", 5, "module name must be a lowercase slug"),
        ("-acme/x", 0, "owner must be a lowercase slug"),
        ("acme/x/y@1", 6, "module name must be a lowercase slug"),
        ("ac me/x", 2, "owner must be a lowercase slug"),
        ("acmé/x", 3, "owner must be a lowercase slug"),
        ("o/" + "n" * 64, 65, "longer than 63"),
        ("acme/x@", 7, "empty constraint after '@'"),
        ("acme/x@  ", 7, "empty constraint after '@'"),
        ("acme/x@^1.02", 10, "leading zero"),
        ("acme/x@1 - ", 9, "hyphen range needs a version after"),
    ],
)
def test_parse_requirement_errors(text: str, offset: int, what: str) -> None:
    with pytest.raises(VersionError) as info:
        parse_requirement(text)
    message = str(info.value)
    assert message.startswith(f"invalid requirement {text!r}: at offset {offset} ")
    assert what in message


def test_requirement_length_limit() -> None:
    with pytest.raises(VersionError, match="longer than the limit"):
        parse_requirement("a/b@" + "1" * 2000)


def test_requirement_built_in_code_prints_normalised() -> None:
    r = Requirement("a", "b", Constraint(((),)))
    assert str(r) == "a/b@*"


# --- properties ----------------------------------------------------------------------------

_nums = st.integers(min_value=0, max_value=40)
_ident = st.one_of(
    st.integers(min_value=0, max_value=50),
    st.from_regex(r"[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*", fullmatch=True).filter(
        lambda s: 0 < len(s) < 10
    ),
)
_build = st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True)
releases = st.builds(Version, _nums, _nums, _nums)
versions = st.builds(
    Version,
    _nums,
    _nums,
    _nums,
    st.lists(_ident, max_size=3).map(tuple),
    st.lists(_build, max_size=2).map(tuple),
)


@given(versions)
def test_version_round_trips(v: Version) -> None:
    assert Version.parse(str(v)) == v
    assert Version.parse("v" + str(v)) == v


@given(releases, releases)
def test_release_order_is_tuple_order(a: Version, b: Version) -> None:
    ta, tb = (a.major, a.minor, a.patch), (b.major, b.minor, b.patch)
    assert (a < b) == (ta < tb)
    assert (a <= b) == (ta <= tb)
    assert (a == b) == (ta == tb)


@given(versions, versions, versions)
def test_precedence_is_a_total_preorder(a: Version, b: Version, c: Version) -> None:
    assert a <= b or b <= a  # total
    assert (a < b) == (not b <= a)  # strict part consistent
    if a <= b <= c:
        assert a <= c  # transitive
    if a <= b <= a:
        assert a.precedence() == b.precedence()


@given(versions)
def test_prerelease_sorts_before_its_release(v: Version) -> None:
    release = Version(v.major, v.minor, v.patch)
    assert (v < release) == bool(v.prerelease)


@given(versions)
def test_caret_and_tilde_allow_their_own_version(v: Version) -> None:
    core = Version(v.major, v.minor, v.patch, v.prerelease)
    for op in ("^", "~", "", "=", ">=", "<="):
        assert Constraint.parse(f"{op}{core}").allows(v), op


_partials = st.one_of(
    versions.map(lambda v: str(Version(v.major, v.minor, v.patch, v.prerelease))),
    st.tuples(_nums, _nums).map(lambda t: f"{t[0]}.{t[1]}"),
    _nums.map(str),
    st.sampled_from(["*", "x", "1.x", "2.3.X"]),
)
_ranges = st.one_of(
    st.tuples(st.sampled_from(["", "=", "<", "<=", ">", ">=", "~", "^", "~>"]), _partials).map(
        "".join
    ),
    st.tuples(_partials, _partials).map(" - ".join),
)
constraints = st.lists(st.lists(_ranges, min_size=1, max_size=3).map(" ".join), min_size=1).map(
    " || ".join
)


@given(constraints)
def test_constraint_round_trips(text: str) -> None:
    c = Constraint.parse(text)
    again = Constraint.parse(str(c))
    assert again == c
    assert str(again) == str(c)


@given(constraints, versions)
def test_normalised_constraint_allows_the_same(text: str, v: Version) -> None:
    c = Constraint.parse(text)
    assert Constraint.parse(str(c)).allows(v) == c.allows(v)


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_version_error(text: str) -> None:
    for parse in (Version.parse, Constraint.parse, parse_requirement):
        try:
            parse(text)
        except VersionError as e:
            assert repr(text) in str(e)
