"""The fleet package's pure parts, and its command line's refusals (no servers)."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from powernode.cli.main import app
from powernode.fleet.cluster import cpu_seconds, haproxy_config
from powernode.fleet.node import route_of
from powernode.fleet.sim import LiveTable, Report, percentile, route_figures


def test_routes_are_one_row_per_endpoint() -> None:
    assert route_of("/node_api/status/heartbeat") == "status/heartbeat"
    assert route_of("/node_api/tasks/abc/ack") == "tasks/ack"
    assert route_of("/node_api/tasks/lease") == "tasks/lease"
    assert route_of("/api/v1/system/node_instances/x/tasks") == "node_instances/tasks"


def test_percentiles() -> None:
    assert percentile([], 0.99) == 0.0
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    figs = route_figures({"events": [0.01, 0.02]}, {"events": {200: 1, 503: 1}}, 2.0)
    assert figs["events"]["per_second"] == 1.0
    assert figs["events"]["answers_5xx_429_or_none"] == 1


def test_haproxy_passes_tcp_through_and_checks_every_api_process() -> None:
    cfg = haproxy_config(8443, [9001, 9002, 9003])
    assert "mode tcp" in cfg
    assert "ssl crt" not in cfg  # terminates nothing: the client certificate reaches the API
    assert "bind 127.0.0.1:8443\n" in cfg
    for i, port in enumerate((9001, 9002, 9003)):
        assert f"server api{i} 127.0.0.1:{port} check check-ssl verify none" in cfg
    assert "option httpchk GET /healthz" in cfg
    assert "option redispatch" in cfg
    assert "timeout check 5s" in cfg  # a slow answer on a busy host is not a dead process


def test_the_live_table_folds_the_shards() -> None:
    lines: list[str] = []
    table = LiveTable(10, lines.append, lambda: 5_000_000)
    table.take(Report(0, enrolled=4))
    table.take(Report(1, enrolled=6))
    table.take(Report(0, None, {"status/heartbeat": [0.01, 0.02]}, {"status/heartbeat": 2}))
    table.take(Report(1, None, {"status/heartbeat": [0.03]}, {"status/heartbeat": 1}, {"x": 1}))
    table.print()
    text = lines[0]
    assert "nodes enrolled 10/10" in text
    assert "database 5.0 MB" in text
    row = next(line for line in text.splitlines() if "status/heartbeat" in line)
    assert row.split()[-2:] == ["3", "0"]


def test_cpu_seconds_of_this_process() -> None:
    sum(i * i for i in range(200_000))
    assert cpu_seconds([os.getpid()]) > 0
    assert cpu_seconds([2**22 + 1]) == 0.0  # no such process: nothing, no error


def test_simulate_without_a_token_says_so(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    r = CliRunner().invoke(
        app, ["fleet", "simulate", "--platform-ca", str(ca)], env={"POWERNODE_TOKEN": ""}
    )
    assert r.exit_code == 1
    assert "--token" in r.output


def test_cluster_refuses_sqlite(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app,
        ["fleet", "cluster", "--database", "sqlite:///x.db", "--data-dir", str(tmp_path / "d")],
    )
    assert r.exit_code == 1
    assert "PostgreSQL" in r.output
    assert not (tmp_path / "d").exists()
