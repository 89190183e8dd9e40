"""rsync-style globs: a table of rules, validation errors, sets, rule lists, select."""

from __future__ import annotations

import pytest

from powernode.core.globs import (
    Glob,
    GlobSet,
    RuleList,
    select,
    validate_pattern,
    with_parents,
)
from powernode.errors import GlobError

from .globref import ref_matches

F, D = False, True  # is_dir

# (id, pattern, path, is_dir, expected)
CASES = [
    # literal and anchoring
    ("anchored-literal", "/etc/hosts", "/etc/hosts", F, True),
    ("anchored-literal-other", "/etc/hosts", "/etc/hostname", F, False),
    ("anchored-not-deeper", "/etc/hosts", "/x/etc/hosts", F, False),
    ("anchored-dir-too", "/etc/nginx", "/etc/nginx", D, True),
    ("name-any-depth", "hosts", "/etc/hosts", F, True),
    ("name-at-root", "hosts", "/hosts", F, True),
    ("name-deep", "nginx.conf", "/a/b/c/nginx.conf", F, True),
    ("name-whole-component", "hosts", "/etc/myhosts", F, False),
    ("name-not-a-prefix", "etc", "/etc/hosts", F, False),
    ("slash-suffix-match", "nginx/nginx.conf", "/etc/nginx/nginx.conf", F, True),
    ("slash-suffix-boundary", "nginx/nginx.conf", "/etc/xnginx/nginx.conf", F, False),
    ("slash-suffix-whole", "etc/nginx", "/etc/nginx", F, True),
    ("slash-not-middle", "etc/nginx", "/etc/nginx/x", F, False),
    # *
    ("star-in-name", "/etc/*.conf", "/etc/a.conf", F, True),
    ("star-empty", "/etc/*.conf", "/etc/.conf", F, True),
    ("star-stops-at-slash", "/etc/*.conf", "/etc/a/b.conf", F, False),
    ("star-whole-component", "/etc/*", "/etc/nginx", D, True),
    ("star-not-deeper", "/etc/*", "/etc/nginx/nginx.conf", F, False),
    ("star-name-any-depth", "*.conf", "/etc/nginx/conf.d/a.conf", F, True),
    ("star-two", "/usr/*/lib*", "/usr/local/libfoo", F, True),
    # **
    ("dstar-deep", "/etc/**", "/etc/nginx/conf.d/a.conf", F, True),
    ("dstar-one-level", "/etc/**", "/etc/hosts", F, True),
    ("dstar-not-dir-itself", "/etc/**", "/etc", D, False),
    ("dstar-middle", "/usr/**/bin/x", "/usr/a/b/bin/x", F, True),
    ("dstar-middle-needs-dir", "/usr/**/bin/x", "/usr/bin/x", F, False),
    ("dstar-no-slash-full-path", "lib**so", "/usr/lib/x86/a.so", F, True),
    ("dstar-suffix", "**/x", "/a/b/x", F, True),
    ("dstar-suffix-needs-parent", "**/x", "/x", F, False),
    ("many-stars-are-dstar", "/a/****", "/a/b/c", F, True),
    # ?
    ("qmark-one", "/etc/host?", "/etc/hosts", F, True),
    ("qmark-not-zero", "/etc/host?", "/etc/host", F, False),
    ("qmark-not-slash", "/etc?hosts", "/etc/hosts", F, False),
    # [...]
    ("class", "/dev/tty[0-9]", "/dev/tty7", F, True),
    ("class-miss", "/dev/tty[0-9]", "/dev/ttyS", F, False),
    ("class-neg-bang", "/dev/tty[!0-9]", "/dev/ttyS", F, True),
    ("class-neg-caret", "/dev/tty[^0-9]", "/dev/tty1", F, False),
    ("class-bracket-first", "/x[]a]", "/x]", F, True),
    ("class-posix", "/x[[:digit:]]", "/x5", F, True),
    ("class-posix-miss", "/x[[:alpha:]]", "/x5", F, False),
    ("class-never-slash", "/a[!b]c", "/a/c", F, False),
    ("class-range-slash", "/a[.-0]c", "/a/c", F, False),
    ("class-dash-last", "/a[b-]", "/a-", F, True),
    # escapes
    ("escape-star", "/a\\*", "/a*", F, True),
    ("escape-star-literal", "/a\\*", "/ab", F, False),
    ("escape-qmark", "/a\\?", "/a?", F, True),
    ("escape-bracket", "/a\\[b]", "/a[b]", F, True),
    ("escape-plain-char", "/a\\b", "/ab", F, True),
    # trailing /
    ("dir-only-dir", "/etc/nginx/", "/etc/nginx", D, True),
    ("dir-only-file", "/etc/nginx/", "/etc/nginx", F, False),
    ("dir-only-name", "cache/", "/var/cache", D, True),
    ("dir-only-name-file", "cache/", "/var/cache", F, False),
    ("dir-list-form", "cache/", "/var/cache/", F, True),
    # dir/***
    ("triple-dir-itself", "/etc/nginx/***", "/etc/nginx", D, True),
    ("triple-not-file-itself", "/etc/nginx/***", "/etc/nginx", F, False),
    ("triple-under", "/etc/nginx/***", "/etc/nginx/a/b", F, True),
    ("triple-sibling", "/etc/nginx/***", "/etc/nginxx", D, False),
    ("triple-unanchored", "nginx/***", "/etc/nginx", D, True),
    ("triple-root", "/***", "/anything/at/all", F, True),
]


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rule_table(pattern: str, path: str, is_dir: bool, expected: bool) -> None:
    assert Glob.compile(pattern).matches(path, is_dir) is expected
    assert GlobSet([pattern]).matches(path, is_dir) is expected
    # the reference matcher agrees with every row, so the property tests
    # compare against something that is itself right on the table
    assert ref_matches(pattern, path, is_dir) is expected


def test_table_has_forty_rows_with_unique_ids() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "at offset 0: empty pattern"),
        ("/etc/[ab", "at offset 5: '[' has no closing ']'"),
        ("/etc/x[", "at offset 6"),
        ("a\0b", "at offset 1: NUL character"),
        ("/etc/x\\", "at offset 6: lone '\\' at the end"),
        ("x" * 4097, "longer than 4096 characters"),
        ("/etc//x", "at offset 5: empty path component"),
        ("/", "artifact root"),
        ("/a[z-a]", "at offset 3: range z-a is reversed"),
        ("/a[[:bogus:]]", "unknown class [:bogus:]"),
    ],
    ids=[
        "empty",
        "unbalanced",
        "unbalanced-offset",
        "nul",
        "trailing-backslash",
        "too-long",
        "empty-component",
        "root",
        "reversed-range",
        "posix-name",
    ],
)
def test_invalid_patterns_name_pattern_and_offset(pattern: str, fragment: str) -> None:
    with pytest.raises(GlobError) as e:
        validate_pattern(pattern)
    assert fragment in str(e.value)
    assert str(e.value).startswith("glob " + repr(pattern[:20])[:-1])
    with pytest.raises(GlobError):
        Glob.compile(pattern)
    with pytest.raises(GlobError):
        GlobSet(["/ok", pattern])


@pytest.mark.parametrize(
    ("pattern", "offset", "component"),
    [
        ("etc/../../root/.ssh/**", 4, ".."),
        ("/etc/./x", 5, "."),
        ("./etc", 0, "."),
        ("/etc/..", 5, ".."),
        ("/etc/../", 5, ".."),
        ("/etc/../***", 5, ".."),
        ("**/../x", 3, ".."),
        ("/a/\\.\\./b", 3, ".."),
        ("..", 0, ".."),
    ],
    ids=[
        "issue-13-item-14",
        "dot",
        "leading-dot",
        "trailing-dotdot",
        "dotdot-dir-only",
        "dotdot-triple",
        "after-doublestar",
        "escaped-dots",
        "bare-dotdot",
    ],
)
def test_dot_components_never_match_and_are_refused(
    pattern: str, offset: int, component: str
) -> None:
    """Regression (issue 13 item 14): ``etc/../../root/.ssh/**`` was accepted silently."""
    with pytest.raises(GlobError) as e:
        validate_pattern(pattern)
    assert e.value.offset == offset
    assert f"at offset {offset}: path component {component!r}" in str(e.value)


@pytest.mark.parametrize(
    "pattern", ["/etc/.*", "/etc/..?", "/etc/...", "/.hidden/x", "a.b/..c", "/etc/*./x"]
)
def test_dots_with_other_characters_are_names(pattern: str) -> None:
    validate_pattern(pattern)


def test_long_pattern_message_is_shortened() -> None:
    with pytest.raises(GlobError) as e:
        validate_pattern("/" + "x" * 5000)
    assert len(str(e.value)) < 400


def test_relative_path_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        Glob.compile("x").matches("etc/x")


def test_globset_find_which_and_matching() -> None:
    gs = GlobSet(["/etc/**", "*.conf", "/usr/*/", "cache/***"])
    assert gs.find("/etc/a") == 0
    assert gs.find("/x/y.conf") == 1
    assert gs.find("/usr/lib/") == 2
    assert gs.find("/usr/lib") is None  # dir-only pattern, a file
    assert gs.find("/var/cache/") == 3
    assert gs.find("/nothing") is None
    assert gs.which("/etc/a.conf") == [0, 1]
    paths = ["/etc/", "/etc/a", "/q/x.conf", "/usr/lib/", "/usr/lib", "/var/cache/", "/z"]
    assert gs.matching(paths) == ["/etc/a", "/q/x.conf", "/usr/lib/", "/var/cache/"]
    assert gs.find_many(paths) == {"/etc/a": 0, "/q/x.conf": 1, "/usr/lib/": 2, "/var/cache/": 3}
    assert len(gs) == 4


def test_empty_globset_matches_nothing() -> None:
    gs = GlobSet([])
    assert not gs.matches("/a")
    assert gs.matching(["/a", "/b/"]) == []
    assert gs.find("/a") is None


def test_dir_only_set_never_matches_files() -> None:
    gs = GlobSet(["a/"])
    assert gs.matching(["/a", "/a/", "/b/a/"]) == ["/a/", "/b/a/"]


@pytest.mark.parametrize(
    ("path", "is_dir", "expected"),
    [
        ("/etc/nginx/nginx.conf", F, True),
        ("/etc/nginx/sites-enabled/default", F, False),
        ("/etc/nginx/sites-enabled/", F, True),
        ("/etc/ssh/sshd_config", F, False),
        ("/tmp/x", F, None),
    ],
    ids=["included", "excluded-first", "dir-included", "catch-all", "no-rule"],
)
def test_rulelist_first_match_wins(path: str, is_dir: bool, expected: bool | None) -> None:
    rules = RuleList(
        ["- /etc/nginx/sites-enabled/*", "+ /etc/nginx/**", "+ /etc/nginx/", "- /etc/**"]
    )
    assert rules.decide(path, is_dir) is expected


@pytest.mark.parametrize("bad", ["+/etc", "* /etc", "+ ", "", "- /etc//x"])
def test_rulelist_rejects_bad_rules(bad: str) -> None:
    with pytest.raises(GlobError) as e:
        RuleList(["+ /ok", bad])
    assert "rule 1" in str(e.value) or "glob" in str(e.value)


TREE = [
    "/etc/",
    "/etc/nginx/",
    "/etc/nginx/nginx.conf",
    "/etc/nginx/sites-enabled/",
    "/etc/nginx/sites-enabled/default",
    "/etc/hosts",
    "/var/",
    "/var/www/",
    "/var/www/healthz/",
    "/var/www/healthz/index.html",
]


def test_select_is_file_spec_minus_mask_in_input_order() -> None:
    got = select(TREE, ["/etc/nginx/**", "/var/www/healthz/**"], ["/etc/nginx/sites-enabled/*"])
    assert got == [
        "/etc/nginx/nginx.conf",
        "/etc/nginx/sites-enabled/",
        "/var/www/healthz/index.html",
    ]


def test_select_does_not_add_parents_but_with_parents_does() -> None:
    got = select(TREE, ["/etc/nginx/**"], [])
    assert "/etc/nginx/" not in got  # "**" does not match the directory itself
    full = with_parents(got)
    assert full == [
        "/etc/",
        "/etc/nginx/",
        "/etc/nginx/nginx.conf",
        "/etc/nginx/sites-enabled/",
        "/etc/nginx/sites-enabled/default",
    ]


def test_select_with_triple_keeps_the_dir() -> None:
    assert select(TREE, ["/var/www/***"], ["index.html"]) == ["/var/www/", "/var/www/healthz/"]


def test_with_parents_when_a_parent_is_given_without_its_own_parent() -> None:
    # "/a/b/" is in the input; "/a/" must still be added
    assert with_parents(["/a/b/", "/a/b/c"]) == ["/a/", "/a/b/", "/a/b/c"]
    assert with_parents([]) == []
    assert with_parents(["/x"]) == ["/x"]


def test_glob_is_frozen_and_compares_by_pattern() -> None:
    g = Glob.compile("/a/*")
    assert g == Glob.compile("/a/*")
    assert g.anchored and not g.dir_only
    with pytest.raises(AttributeError):
        g.pattern = "/b"  # type: ignore[misc]


def test_globset_literal_grouped_and_floating_patterns_agree_with_reference() -> None:
    # literals are a dict lookup, "/etc/..." patterns share a group, names float
    pats = ["/etc/shadow", "/etc/ssh/*", "/etc/", "/usr/lib/**", "/etc/***", "*.conf", "/a"]
    gs = GlobSet(pats)
    paths = [
        "/etc/shadow",
        "/etc/",
        "/etc/ssh/x",
        "/etc/ssh/",
        "/usr/lib/a/b",
        "/x.conf",
        "/a",
        "/a/",
        "/etc",
        "/usr/lib/",
    ]
    for p in paths:
        expect = [i for i, q in enumerate(pats) if ref_matches(q, p)]
        assert gs.which(p) == expect, p
        found = gs.find(p)
        assert (found in expect) if expect else found is None, p
