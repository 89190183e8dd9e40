"""Issue 13 item 9 without the fuzzer: every 405 carries ``Allow``; each pattern in
/openapi.json accepts exactly what the service's own check accepts; integers and
booleans are what JSON Schema calls them."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from powernode.core.semver import MAX_NUMBER, Version
from powernode.errors import VersionError
from powernode.platform.api import patterns
from powernode.platform.problems import InvalidInputError
from powernode.platform.services.catalog import MODULE_NAME
from powernode.platform.services.ingest import tag_version
from powernode.platform.services.nodes import check_hostname
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem

OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_405_lists_the_paths_methods_in_allow(platform: Platform) -> None:
    # Generic: every path of the document, every method it does not declare.
    paths: dict[str, dict[str, Any]] = platform.app.openapi()["paths"]
    assert len(paths) >= 30
    seen = 0
    for path, ops in paths.items():
        declared = {m.upper() for m in ops}
        for method in OTHER_METHODS:
            if method in declared:
                continue
            r = platform.raw(method, _concrete(path))
            assert r.status_code == 405, (method, path, r.text)
            allow = {m.strip() for m in r.headers["allow"].split(",")}
            assert allow == declared, (method, path)
            assert r.headers["content-type"].startswith("application/problem+json")
            seen += 1
    assert seen > 5 * len(paths)


def test_module_name_pattern_is_the_services() -> None:
    assert MODULE_NAME.pattern == patterns.MODULE_NAME


def _hostname_ok(text: str) -> bool:
    try:
        check_hostname(text)
    except InvalidInputError:
        return False
    return True


@given(st.text(alphabet="ab9-.A_", max_size=20))
@example("a" * 63 + ".b")
@example("a" * 64)
@example("a-")
@example("a..b")
def test_hostname_pattern_accepts_what_check_hostname_accepts(text: str) -> None:
    assert bool(re.fullmatch(patterns.HOSTNAME, text)) == _hostname_ok(text)


def _parses(text: str) -> bool:
    try:
        Version.parse(text)
    except VersionError:
        return False
    return True


_SEMVERISH = st.text(alphabet="v0123456789.-+aZ", max_size=24)


@given(_SEMVERISH)
@example("1.0.0-rc.1+build.5")
@example("v1.0.0")
@example("01.0.0")
@example("1.0.0-01")
@example(f"{MAX_NUMBER}.0.0")
@example(f"{MAX_NUMBER + 1}.0.0")
@example(f"1.0.0-{MAX_NUMBER + 1}")
def test_semver_pattern_accepts_what_version_parse_accepts(text: str) -> None:
    assert bool(re.fullmatch(patterns.SEMVER, text)) == _parses(text)


@given(_SEMVERISH)
@example("v1.0.0")
@example("1.0.0+build")
def test_semver_tag_pattern_accepts_what_ingest_takes_for_a_version(text: str) -> None:
    assert bool(re.fullmatch(patterns.SEMVER_TAG, text)) == (tag_version(text) is not None)


@given(st.integers(min_value=0, max_value=10**18) | st.integers(MAX_NUMBER - 20, MAX_NUMBER + 20))
def test_number_at_most_is_exact(n: int) -> None:
    assert bool(re.fullmatch(patterns.number_at_most(MAX_NUMBER), str(n))) == (n <= MAX_NUMBER)


@pytest.mark.parametrize("limit", [0, 1, 9, 10, 99, 100, 101, 909, 1000, 2**53 - 1])
def test_number_at_most_small_limits(limit: int) -> None:
    rx = patterns.number_at_most(limit)
    for n in range(0, min(limit + 50, 2000)):
        assert bool(re.fullmatch(rx, str(n))) == (n <= limit), (limit, n)
    assert not re.fullmatch(rx, "0" + str(limit))
    assert all(not re.fullmatch(rx, c) for c in string.ascii_letters)


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"effective_priority": 5}, True),
        ({"effective_priority": 5.0}, True),  # JSON Schema: 5.0 is an integer
        ({"effective_priority": "5"}, False),
        ({"effective_priority": True}, False),
        ({"effective_priority": 100_001}, False),
    ],
    ids=["int", "integral-float", "string", "bool", "over-max"],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_integers_are_json_integers(platform: Platform, body: dict[str, Any], ok: bool) -> None:
    r = platform.call("POST", "/node_modules", json={"name": "m", "category_slug": "userland"})
    assert r.status_code == 201, r.text
    r = platform.call("POST", "/node_templates/base/assignments", json={"module_name": "m", **body})
    if ok:
        assert r.status_code == 201, r.text
    else:
        assert_problem(r, 422, "effective_priority")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_booleans_are_json_booleans(platform: Platform) -> None:
    body = {"name": "m", "category_slug": "userland", "require_approval": 0}
    assert_problem(platform.call("POST", "/node_modules", json=body), 422, "require_approval")
