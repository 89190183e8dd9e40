"""The persisted attach state: round trip, bad files, module specs, the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powernode.agent.modules import ModuleSpec, NodeLayout, Refusal
from powernode.agent.modules.state import AttachState, StateFile
from powernode.errors import ConfigError, DataError

D1 = "sha256:" + "a" * 64


def test_round_trip_is_canonical_and_equal(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "agent")
    refusal = Refusal("b", D1, "object-missing", "gone", "/x")
    state = AttachState(
        {"a": ModuleSpec("a", D1, 7, "1.0", "reg/a:1.0")}, 3, ("a" * 64,), {"b": (refusal,)}
    )
    sf.save(state)
    assert sf.load() == state
    raw = sf.path.read_text()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    assert [p.name for p in sf.path.parent.iterdir()] == ["modules.json"]  # no temp left


def test_missing_state_is_empty(tmp_path: Path) -> None:
    assert StateFile(tmp_path).load() == AttachState()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON.*move it aside"),
        ('{"version": 2}', "state version 2 is not 1"),
        ('{"version": 1, "generation": 1}', "malformed attach state.*'modules'"),
        (
            '{"version": 1, "generation": -1, "modules": {}}',
            "generation: expected a non-negative integer",
        ),
        (
            '{"version": 1, "generation": 1, "modules": {"a": {"digest": "x", "priority": 1}}}',
            "'x' is not a sha256 digest",
        ),
    ],
    ids=["not-json", "version", "no-modules", "negative-generation", "bad-digest"],
)
def test_bad_state_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    sf = StateFile(tmp_path)
    sf.path.write_text(text)
    with pytest.raises(DataError, match=message):
        sf.load()
    assert sf.path.read_text() == text  # left for the operator to inspect


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", D1, 1), "module name ''"),
        (("a/b", D1, 1), "module name 'a/b'"),
        (("a", "sha256:12", 1), "is not a sha256 digest"),
        (("a", D1, "1"), "priority must be an integer"),
    ],
    ids=["empty-name", "slash", "short-digest", "str-priority"],
)
def test_module_spec_rejects(args: tuple[str, str, int], message: str) -> None:
    with pytest.raises((ConfigError, DataError), match=message):
        ModuleSpec(*args)


def test_module_spec_accepts_bare_hex() -> None:
    assert ModuleSpec("a", "a" * 64, 1).digest == D1


def test_lock_times_out_with_advice(tmp_path: Path) -> None:
    sf = StateFile(tmp_path)
    with (
        sf.locked(),
        pytest.raises(ConfigError, match="another agent process holds the module lock"),
        StateFile(tmp_path).locked(timeout=0.1),
    ):
        pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"root": Path("rel")}, "root 'rel': must be an absolute path"),
        ({"state": Path("/a:b")}, "may not contain ':'"),
        ({"upper": Path("/u,v")}, "may not contain ','"),
    ],
    ids=["relative-root", "colon-state", "comma-upper"],
)
def test_layout_rejects_paths_overlay_cannot_take(kwargs: dict[str, Path], message: str) -> None:
    base: dict[str, Path] = {"root": Path("/r"), "state": Path("/s")}
    with pytest.raises(ConfigError, match=message):
        NodeLayout(**{**base, **kwargs})
