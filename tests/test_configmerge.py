"""powernode.configmerge: the one defaults < file < environment < overrides merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.configmerge import merge
from powernode.errors import ConfigError

FIELDS = ("a", "b", "c", "d")


def test_each_layer_beats_the_one_below_and_says_where_it_came_from(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text('a = "file"\nb = "file"\nc = "file"\n')
    env = {"P_B": "env", "P_C": "env", "P_D": "env", "OTHER_A": "ignored"}
    got = merge(
        FIELDS,
        file=f,
        env=env,
        env_prefix="P_",
        overrides={"c": "flag", "d": None},
        what="x config",
        flags={"c": "--c"},
    )
    assert got.values == {"a": "file", "b": "env", "c": "flag", "d": "env"}
    assert got.source == {"a": f"{f}: a", "b": "P_B", "c": "--c", "d": "P_D"}


def test_nothing_given_leaves_the_defaults_to_the_class() -> None:
    got = merge(FIELDS, file=None, env={}, env_prefix="P_", overrides={}, what="x config")
    assert got.values == {} and got.source == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r": cannot read x config: No such file or directory$"),
        ("a = ", r": not valid TOML: "),
        ("zz = 1\na = 2\n", r": unknown setting\(s\) zz; known: a, b, c, d$"),
    ],
    ids=["missing", "not-toml", "unknown-key"],
)
def test_a_bad_file_is_a_config_error_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    f = tmp_path / "x.toml"
    if content is not None:
        f.write_text(content)
    with pytest.raises(ConfigError, match=rf"^{f}{message}"):
        merge(FIELDS, file=f, env={}, env_prefix="P_", overrides={}, what="x config")
