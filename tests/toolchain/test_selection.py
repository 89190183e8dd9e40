"""What a module ships from its tree: file_spec minus mask, takeover literals kept."""

from __future__ import annotations

import pytest

from powernode.toolchain.selection import build_mask, is_literal, shipped_paths, takeover_paths

TREE = [
    "/etc/",
    "/etc/chrony/",
    "/etc/chrony/chrony.conf",
    "/etc/chrony/sources.d/",
    "/etc/chrony/sources.d/pool.sources",
    "/etc/nginx/",
    "/etc/nginx/nginx.conf",
    "/etc/nginx/sites-enabled/",
    "/etc/nginx/sites-enabled/default",
    "/var/",
    "/var/www/",
    "/var/www/healthz/",
    "/var/www/healthz/index.html",
]


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [("/etc/x", True), ("/etc/*", False), ("/etc/**", False), ("/a?", False), ("/[ab]", False)],
)
def test_is_literal(pattern: str, literal: bool) -> None:
    assert is_literal(pattern) is literal


def test_mask_excludes_from_own_blob_and_parents_are_kept() -> None:
    got = shipped_paths(
        TREE, ["/etc/nginx/**", "/var/www/healthz/**"], ["/etc/nginx/sites-enabled/default"]
    )
    assert "/etc/nginx/sites-enabled/default" not in got
    assert "/etc/nginx/nginx.conf" in got
    assert "/var/www/healthz/index.html" in got
    # parents of shipped files are in the blob so it can be written as an image
    assert {"/etc/", "/etc/nginx/", "/var/", "/var/www/", "/var/www/healthz/"} <= set(got)
    assert not any(p.startswith("/etc/chrony") for p in got)


def test_literal_in_both_lists_is_a_takeover_and_is_shipped() -> None:
    spec = ["/etc/chrony/chrony.conf"]
    mask = ["/etc/chrony/chrony.conf"]
    assert takeover_paths(spec, mask) == {"/etc/chrony/chrony.conf"}
    assert build_mask(spec, mask) == ()
    assert "/etc/chrony/chrony.conf" in shipped_paths(TREE, spec, mask)


def test_glob_mask_is_never_a_takeover() -> None:
    spec = ["/etc/chrony/**"]
    mask = ["/etc/chrony/sources.d/**"]
    assert takeover_paths(spec, mask) == frozenset()
    got = shipped_paths(TREE, spec, mask)
    assert "/etc/chrony/sources.d/pool.sources" not in got
    assert "/etc/chrony/chrony.conf" in got
