"""The desired-set cache: hits when nothing changed, never stale when anything did.

Every change below is made the way it can happen in production, including
straight SQL from another connection (no service hook could see that), and
the next composition preview must reflect it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from powernode.core.composition import Composition
from powernode.platform.db import NodeModuleAssignment, NodeModuleVersion
from powernode.platform.services.desired_cache import CACHE, DesiredCache
from tests.platform.conftest import Platform
from tests.platform.test_preview import assign, composition, publish


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    CACHE.clear()
    yield
    CACHE.clear()


@pytest.fixture
def two(platform: Platform) -> Platform:
    publish(platform, "a-mod", files=["/x"])
    publish(platform, "b-mod", files=["/x"])
    assign(platform, "base", "a-mod")
    assign(platform, "base", "b-mod")
    return platform


def winners(p: Platform, **params: object) -> dict[str, str]:
    return Composition.from_dict(composition(p, **params)["composition"]).winners()


def test_a_repeated_preview_is_served_from_the_cache(two: Platform) -> None:
    first = composition(two)
    hits = CACHE.hits
    assert composition(two) == first
    assert CACHE.hits == hits + 1


def test_a_promotion_made_by_plain_sql_is_seen(two: Platform) -> None:
    publish(two, "b-mod", "1.1.0", files=["/x", "/y"], state="built")
    before = {m["name"]: m["version_string"] for m in composition(two)["modules"]}
    assert before["b-mod"] == "1.0.0"
    with two.engine.begin() as c:
        c.execute(
            update(NodeModuleVersion)
            .where(NodeModuleVersion.version_string == "1.1.0")
            .values(promotion_state="live")
        )
    after = {m["name"]: m["version_string"] for m in composition(two)["modules"]}
    assert after["b-mod"] == "1.1.0"


def test_a_priority_override_changes_the_winner(two: Platform) -> None:
    assert winners(two) == {"/x": "a-mod"}  # same priority: the tie goes to a-mod
    with two.engine.begin() as c:
        c.execute(
            update(NodeModuleAssignment)
            .where(NodeModuleAssignment.module_id.in_(_module_ids(two, "b-mod")))
            .values(effective_priority=990)
        )
    assert winners(two) == {"/x": "b-mod"}


def test_a_digest_change_is_seen(two: Platform) -> None:
    with two.engine.begin() as c:
        c.execute(update(NodeModuleVersion).values(composefs_digest="sha256:" + "ab" * 32))
    digests = {m["composefs_digest"] for m in composition(two)["modules"]}
    assert digests == {"sha256:" + "ab" * 32}


def test_allowed_states_are_part_of_the_key(two: Platform) -> None:
    publish(two, "b-mod", "1.1.0", files=["/x"], state="staging")
    plain = {m["name"]: m["version_string"] for m in composition(two)["modules"]}
    staged = composition(two, allowed_states=["staging", "blessed", "live"])
    assert plain["b-mod"] == "1.0.0"
    assert {m["name"]: m["version_string"] for m in staged["modules"]}["b-mod"] == "1.1.0"


def test_the_cache_is_bounded() -> None:
    cache = DesiredCache(max_entries=2)
    keys = [("acct", f"t{i}", "n", frozenset({"live"}), "fp") for i in range(3)]
    for k in keys:
        cache.put(k, object())  # type: ignore[arg-type]  # the LRU does not look inside
    assert cache.get(keys[0]) is None
    assert cache.get(keys[2]) is not None


def _module_ids(p: Platform, name: str) -> list[str]:
    r = p.call("GET", f"/node_modules/{name}", role="read")
    assert r.status_code == 200, r.text
    return [r.json()["module"]["id"]]
