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
    stack_rank,
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
        (90, Variety.SUBSCRIPTION, None, 90),
        (90, Variety.CONFIG, None, 90),
        (90, Variety.INSTANCE, None, 90),
        (10, Variety.SUBSCRIPTION, None, 10),
        (60, Variety.INSTANCE, None, 60),
        (90, Variety.SUBSCRIPTION, 95, 95),  # seed 003, as the operator typed it
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
        top = priority_key(
            "a", effective_priority(lower.position, Variety.INSTANCE), Variety.INSTANCE
        )
        bottom = priority_key("z", effective_priority(upper.position, Variety.SUBSCRIPTION))
        assert top < bottom


def test_variety_orders_modules_of_one_priority() -> None:
    """Config beats the subscription it configures, instance beats both, names aside."""
    sub = priority_key("a", 90, Variety.SUBSCRIPTION)
    cfg = priority_key("z", 90, Variety.CONFIG)
    inst = priority_key("zz", 90, Variety.INSTANCE)
    assert sub < cfg < inst


@pytest.mark.parametrize("variety", list(Variety), ids=lambda v: v.value)
def test_seed_003_override_95_is_above_every_userland_module(variety: Variety) -> None:
    """Issue 13 item 11: ``effective_priority: 95 // higher than userland (90)``."""
    override = priority_key("z", effective_priority(90, Variety.SUBSCRIPTION, 95))
    assert override > priority_key("a", effective_priority(90, variety), variety)
    assert override > priority_key("a", effective_priority(10, variety), variety)
    assert override < priority_key("z", 96)


@given(
    st.integers(0, 10_000),
    st.sampled_from(list(Variety)),
    st.integers(0, 10_000),
    st.sampled_from(list(Variety)),
)
def test_stack_rank_encodes_the_order(p1: int, v1: Variety, p2: int, v2: Variety) -> None:
    """The one integer the node API sends orders modules as (priority, variety) does."""
    a, b = (p1, v1.offset), (p2, v2.offset)
    assert (a < b) == (stack_rank(p1, v1) < stack_rank(p2, v2))
    assert (a == b) == (stack_rank(p1, v1) == stack_rank(p2, v2))


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
