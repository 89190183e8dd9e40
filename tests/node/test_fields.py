"""powernode.node.fields: typed, bounded records without pydantic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.node.fields import Bounds, FieldErrors, bounded, build


@dataclass(frozen=True)
class Item:
    id: str = bounded(min_length=1, max_length=8)
    when: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Doc:
    count: int = bounded(0, ge=0, le=10)
    ratio: float = bounded(0.5, gt=0, lt=1)
    flag: bool = False
    where: Path | None = None
    items: list[Item] = field(default_factory=list, metadata={"bounds": Bounds(max_length=2)})

    def __post_init__(self) -> None:
        if self.count == 7:
            raise ValueError("count 7 is unlucky")


def test_defaults_and_values() -> None:
    assert build(Doc, {}) == Doc()
    got = build(
        Doc,
        {
            "count": 3,
            "ratio": 0.25,
            "flag": True,
            "where": "/x",
            "items": [{"id": "a", "when": "2026-01-02T03:04:05Z", "payload": {"k": 1}}],
        },
    )
    assert got.where == Path("/x")
    assert got.items == [Item("a", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), {"k": 1})]


def test_every_problem_is_named_with_its_location() -> None:
    with pytest.raises(FieldErrors) as e:
        build(
            Doc,
            {"count": 11, "ratio": "x", "flag": "yes", "items": [{"id": ""}, {"when": "no"}]},
        )
    msgs = dict(e.value.errors)
    assert msgs["count"] == "must be <= 10, got 11"
    assert "expected a number" in msgs["ratio"]
    assert "expected true or false" in msgs["flag"]  # strings only when lenient
    assert "at least 1" in msgs["items.0.id"]
    assert msgs["items.1.id"] == "field required"
    assert "ISO 8601" in msgs["items.1.when"]


def test_lenient_converts_text_as_the_environment_gives_it() -> None:
    got = build(Doc, {"count": " 4 ", "ratio": "0.75", "flag": "on"}, lenient=True)
    assert (got.count, got.ratio, got.flag) == (4, 0.75, True)
    with pytest.raises(FieldErrors, match="count: expected an integer"):
        build(Doc, {"count": "4.5"}, lenient=True)


def test_unknown_fields_forbidden_or_ignored() -> None:
    with pytest.raises(FieldErrors, match="surprise: unknown field"):
        build(Doc, {"surprise": 1}, extra="forbid")
    assert build(Doc, {"surprise": 1}) == Doc()


def test_bool_is_not_an_int_and_lists_are_bounded() -> None:
    with pytest.raises(FieldErrors, match="count: expected an integer"):
        build(Doc, {"count": True})
    with pytest.raises(FieldErrors, match="items: must have at most 2"):
        build(Doc, {"items": [{"id": "a"}] * 3})


def test_post_init_checks_become_field_errors() -> None:
    with pytest.raises(FieldErrors, match="count 7 is unlucky"):
        build(Doc, {"count": 7})


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists))
def test_any_json_is_a_record_or_field_errors(doc: Any) -> None:
    try:
        build(Doc, {"count": doc, "items": doc})
    except FieldErrors as e:
        assert e.errors


def test_an_oversized_list_is_refused_before_its_items_are_read() -> None:
    with pytest.raises(FieldErrors) as e:
        build(Doc, {"items": [{"id": ""}] * 5000})
    assert e.value.errors == [("items", "must have at most 2 items, has 5000")]


def test_a_long_list_of_problems_names_the_first_ten_and_counts_the_rest() -> None:
    @dataclass(frozen=True)
    class Many:
        items: list[Item] = field(default_factory=list)

    with pytest.raises(FieldErrors) as e:
        build(Many, {"items": [{"id": "x" * 9000}] * 25})
    assert len(e.value.errors) == 25
    message = str(e.value)
    assert message.count("items.") == 10
    assert message.endswith("; and 15 more")
    assert len(message) < 2000


def test_a_huge_bad_value_is_shown_shortened() -> None:
    with pytest.raises(FieldErrors) as e:
        build(Doc, {"ratio": "9" * 10_000})
    assert len(str(e.value)) < 200


def test_the_agent_process_does_not_load_pydantic() -> None:
    # pydantic cost the agent ~15 MB of its 50 MB budget (bench/bench_agent_rss.py).
    import subprocess
    import sys

    code = (
        "import sys, powernode.cli.agent, powernode.agent.runtime, powernode.agent.transport;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
