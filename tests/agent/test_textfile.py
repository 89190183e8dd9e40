"""The agent's node-exporter textfile, parsed with prometheus-client's parser."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from powernode.agent.textfile import FILENAME, AgentFigures, render, write

FIGURES = AgentFigures(
    version="0.1.0",
    heartbeats=12,
    failed_heartbeats=2,
    last_heartbeat=datetime(2026, 12, 7, 14, 0, tzinfo=UTC),
    events_pending=3,
    outcomes_pending=1,
    certificate_not_after=datetime(2027, 1, 6, tzinfo=UTC),
    running_modules={"nginx": "sha256:ab", 'we"ird\\name\n': "sha256:cd"},
)


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_render_parses_back() -> None:
    m = parse(render(FIGURES))
    assert m["powernode_agent_heartbeats"] == [({}, 12.0)]
    assert m["powernode_agent_heartbeat_failures"] == [({}, 2.0)]
    assert m["powernode_agent_last_heartbeat_timestamp_seconds"] == [
        ({}, FIGURES.last_heartbeat.timestamp())  # type: ignore[union-attr]
    ]
    assert sorted(m["powernode_agent_spool_pending"], key=str) == [
        ({"kind": "event"}, 3.0),
        ({"kind": "outcome"}, 1.0),
    ]
    assert m["powernode_agent_module_info"] == [
        ({"module": "nginx", "digest": "sha256:ab"}, 1.0),
        ({"module": 'we"ird\\name\n', "digest": "sha256:cd"}, 1.0),  # escaped and back
    ]
    assert m["powernode_agent_build_info"] == [({"version": "0.1.0"}, 1.0)]


def test_unknown_times_are_left_out() -> None:
    bare = AgentFigures("0.1.0", 0, 0, None, 0, 0, None)
    m = parse(render(bare))
    assert "powernode_agent_last_heartbeat_timestamp_seconds" not in m
    assert "powernode_agent_certificate_expiry_timestamp_seconds" not in m
    assert m["powernode_agent_module_info"] == []


def test_write_replaces_atomically(tmp_path: Path) -> None:
    old = tmp_path / FILENAME
    old.write_text("old")
    inode = old.stat().st_ino
    path = write(tmp_path, FIGURES)
    assert path == old
    assert path.stat().st_ino != inode  # a new file renamed over, never rewritten in place
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert parse(path.read_text())["powernode_agent_heartbeats"] == [({}, 12.0)]
    assert sorted(os.listdir(tmp_path)) == [FILENAME]  # no temporary left


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / FILENAME).write_text("old")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        write(tmp_path, FIGURES)
    assert (tmp_path / FILENAME).read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == [FILENAME]
