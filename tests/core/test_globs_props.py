"""Property tests: the compiled matcher against the backtracking reference."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from powernode.core.globs import Glob, GlobSet, validate_pattern
from powernode.errors import GlobError

from .globref import ref_matches

PIECES = ["a", "b", "ab", ".", "-", "*", "**", "?", "[ab]", "[!a]", "[a-b]", "[]a]", "\\*", "/"]
COMPONENTS = ["a", "b", "ab", "ba", ".a", "a.b", "*", "]", "-", "aa", "b-a"]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    body = "".join(draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6)))
    lead = draw(st.sampled_from(["", "/"]))
    tail = draw(st.sampled_from(["", "", "/", "/***"]))
    pat = lead + body + tail
    assume("//" not in pat and pat not in {"/"})
    # "." and ".." components are refused (they never match a normalised path; see
    # test_dot_components_would_never_match)
    assume(not {".", ".."} & set(pat.split("/")))
    return pat


paths = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=5).map(
    lambda cs: "/" + "/".join(cs)
)


@settings(max_examples=600, deadline=None)
@given(patterns(), paths, st.booleans())
def test_compiled_glob_agrees_with_reference(pattern: str, path: str, is_dir: bool) -> None:
    assert Glob.compile(pattern).matches(path, is_dir) == ref_matches(pattern, path, is_dir)


@settings(max_examples=300, deadline=None)
@given(patterns(), st.sampled_from([".", ".."]), st.integers(0, 8), paths, st.booleans())
def test_dot_components_would_never_match(
    pattern: str, dots: str, at: int, path: str, is_dir: bool
) -> None:
    """Why they are refused: by rsync's rules (the reference) they match no artifact path."""
    parts = pattern.split("/")
    parts.insert(min(at, len(parts)), dots)
    bad = "/".join(parts)
    assume("//" not in bad and not bad.endswith("/***/" + dots))
    assert not ref_matches(bad, path, is_dir)
    try:
        validate_pattern(bad)
    except GlobError as e:
        assert "path component" in str(e) or "empty path component" in str(e)
    else:
        raise AssertionError(f"{bad!r} was accepted")


@settings(max_examples=300, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=6), st.lists(paths, max_size=8), st.booleans())
def test_globset_is_any_of_its_patterns(pats: list[str], ps: list[str], as_dirs: bool) -> None:
    gs = GlobSet(pats)
    listed = [p + "/" if as_dirs else p for p in ps]
    expect = [p for p in listed if any(ref_matches(q, p) for q in pats)]
    assert gs.matching(listed) == expect
    for p in listed:
        found = gs.find(p)
        if p in expect:
            assert found is not None and ref_matches(pats[found], p)
            assert gs.which(p) == [i for i, q in enumerate(pats) if ref_matches(q, p)]
        else:
            assert found is None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab/*?[]!^-\\:\0", max_size=12))
def test_any_text_compiles_or_raises_globerror_with_offset(text: str) -> None:
    try:
        validate_pattern(text)
    except GlobError as e:
        assert "at offset" in str(e)
        return
    g = Glob.compile(text)  # valid patterns always compile to a working regex
    assert isinstance(g.matches("/a/b"), bool)
