"""Priorities: variety order, seeded categories, the formula and the total order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.core.priority import (
    SEEDED_CATEGORIES,
    Category,
    Variety,
    effective_priority,
    priority_key,
)


def test_variety_order_is_subscription_config_instance() -> None:
    assert sorted([Variety.INSTANCE, Variety.SUBSCRIPTION, Variety.CONFIG]) == [
        Variety.SUBSCRIPTION,
        Variety.CONFIG,
        Variety.INSTANCE,
    ]
    assert Variety.SUBSCRIPTION < Variety.CONFIG < Variety.INSTANCE
    assert Variety.INSTANCE >= Variety.CONFIG >= Variety.CONFIG
    assert Variety("config") is Variety.CONFIG  # parsed from manifests/templates by value


def test_variety_does_not_compare_with_plain_strings_by_rank() -> None:
    with pytest.raises(TypeError):
        _ = Variety.CONFIG < 3  # type: ignore[operator]


def test_seeded_categories() -> None:
    positions = {c.slug: c.position for c in SEEDED_CATEGORIES}
    assert positions == {
        "system-base": 10,
        "network-overlay": 60,
        "container-runtimes": 70,
        "security-hardening": 80,
        "userland": 90,
    }
    assert list(SEEDED_CATEGORIES) == sorted(SEEDED_CATEGORIES, key=lambda c: c.position)
    assert Category("system-base", 10) in SEEDED_CATEGORIES


@pytest.mark.parametrize(
    ("position", "variety", "override", "expected"),
    [
        (90, Variety.SUBSCRIPTION, None, 900),
        (90, Variety.CONFIG, None, 903),
        (90, Variety.INSTANCE, None, 906),
        (10, Variety.SUBSCRIPTION, None, 100),
        (60, Variety.INSTANCE, None, 606),
        (90, Variety.SUBSCRIPTION, 950, 950),
        (90, Variety.INSTANCE, 0, 0),  # an override of 0 is an override, not "unset"
    ],
    ids=["sub", "config", "instance", "base", "net-instance", "override", "override-zero"],
)
def test_effective_priority(
    position: int, variety: Variety, override: int | None, expected: int
) -> None:
    assert effective_priority(position, variety, override) == expected


def test_no_variety_lifts_a_module_into_the_next_category() -> None:
    cats = sorted(SEEDED_CATEGORIES, key=lambda c: c.position)
    for lower, upper in itertools.pairwise(cats):
        top_of_lower = effective_priority(lower.position, Variety.INSTANCE)
        assert top_of_lower < effective_priority(upper.position, Variety.SUBSCRIPTION)


def test_higher_priority_wins() -> None:
    assert priority_key("zzz", 901) > priority_key("aaa", 900)


@pytest.mark.parametrize(
    ("a", "b"),
    [("apache", "nginx"), ("a", "ab"), ("Z", "a"), ("nginx", "nginx-tokyo"), ("z", "é")],
    ids=["plain", "prefix", "uppercase-first", "dash", "non-ascii"],
)
def test_ties_go_to_the_bytewise_smaller_name(a: str, b: str) -> None:
    assert a.encode() < b.encode()
    assert max([(priority_key(n, 5), n) for n in (a, b)])[1] == a
    assert max([(priority_key(n, 5), n) for n in (b, a)])[1] == a


@given(st.lists(st.tuples(st.text(min_size=1, max_size=6), st.integers(-5, 5)), max_size=12))
def test_priority_key_is_a_total_order_matching_the_mount_stack(
    mods: list[tuple[str, int]],
) -> None:
    uniq = list(dict.fromkeys(mods))
    stack = sorted(uniq, key=lambda m: priority_key(m[0], m[1]))  # lowest first
    # mount.compose stacks by (-priority, name), first = top: the same order reversed
    top_first = sorted(uniq, key=lambda m: (-m[1], m[0].encode()))
    assert stack == list(reversed(top_first))
    keys = [priority_key(n, p) for n, p in uniq]
    assert len(set(keys)) == len(uniq)  # distinct modules never tie
