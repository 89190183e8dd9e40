"""The agent's placeholder language: bounded, no code, a placeholder naming no fact
refused naming the field (the platform side: tests/platform/nodeapi/test_instance_facts.py)."""

from __future__ import annotations

import pytest

from powernode.agent.placeholders import MAX_PLACEHOLDERS, render
from powernode.errors import DataError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "${instance.nope}",
            r"placeholder \$\{instance.nope\} names no fact \(facts: instance.hostname\)",
        ),
        ("${instance.hostname", r"'\$\{' at offset 0 is not closed"),
        ("${$(rm -rf /)}", r"'\$\{' at offset 0 is not closed"),
        ("${x" + "}" * 0, "not closed"),
    ],
)
def test_bad_placeholders_are_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(DataError, match="f.conf: .*" + message):
        render(text, {"instance.hostname": "n1"}, "f.conf")


def test_bounded() -> None:
    with pytest.raises(DataError, match="more than"):
        render("${a}" * (MAX_PLACEHOLDERS + 1), {"a": "x"}, "f")
    assert render("$HOME and $$ stay", {}, "f") == "$HOME and $$ stay"
