"""The per-bench table of bench/compare.py: arguments, rounds and the figures' regexes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    label: str
    pattern: str  # group 1 is the number; with per_1000: group 2 / group 1 * 1000
    unit: str
    higher_is_better: bool
    per_1000: bool = False


@dataclass(frozen=True)
class Spec:
    args: tuple[str, ...] = ()
    rounds: int = 2
    timeout: float = 600.0
    figures: tuple[Figure, ...] = ()
    needs: tuple[str, ...] = ()  # executables that must be on PATH
    root: bool = False


def _fig(label: str, pattern: str, unit: str, higher: bool = False, per: bool = False) -> Figure:
    return Figure(label, pattern, unit, higher, per)


# The headline first; the rest are printed too (the bench's own ratio to its
# reference, measured in the same run, is less sensitive to the machine's load).
BENCHES: dict[str, Spec] = {
    "bench_compose": Spec(
        rounds=3,
        figures=(
            _fig("compose() best of 5", r"^compose\(\):\s+([\d.]+) ms", "ms"),
            _fig("ratio to set union", r"^ratio:\s+([\d.]+)x\s*$", "x"),
        ),
    ),
    "bench_cli_start": Spec(
        args=("--runs", "5"),
        rounds=2,
        figures=(
            _fig("powernode --help median", r"^powernode --help\s+([\d.]+)s", "s"),
            _fig("powernode-agent --help median", r"^powernode-agent --help\s+([\d.]+)s", "s"),
            _fig("powernode --help x pass", r"^powernode --help\s+\S+\s+\S+\s+([\d.]+)x", "x"),
            _fig("powernode --help cpu", r"^powernode --help\s+\S+\s+\S+\s+\S+\s+([\d.]+)s", "s"),
            _fig(
                "powernode-agent --help cpu",
                r"^powernode-agent --help\s+\S+\s+\S+\s+\S+\s+([\d.]+)s",
                "s",
            ),
        ),
    ),
    "bench_heartbeats": Spec(
        args=("--seconds", "5"),
        rounds=2,
        needs=("pg_ctl",),
        figures=(
            _fig("heartbeats/s", r"^\s+heartbeat\s+(\d+)\s", "/s", True),
            _fig("p99", r"^\s+heartbeat\s+\d+\s+[\d.]+\s+([\d.]+)", "ms"),
            _fig(
                "server CPU per heartbeat",
                r"^\s+heartbeat\s+(\d+)\s+\S+\s+\S+\s+\S+\s+([\d.]+)",
                "ms",
                per=True,
            ),
            _fig(
                "ratio to bare endpoint", r"^\s+heartbeat\s+\d+\s+\S+\s+\S+\s+([\d.]+)", "x", True
            ),
        ),
    ),
    "bench_attach": Spec(
        rounds=2,
        root=True,
        figures=(
            _fig("warm attach p50", r"^attach, warm \(sealed\)\s+p50\s+([\d.]+) ms", "ms"),
            _fig("warm attach p95", r"^attach, warm \(sealed\).*p95\s+([\d.]+) ms", "ms"),
            _fig("cold attach p50", r"^attach, cold \(deep\)\s+p50\s+([\d.]+) ms", "ms"),
            _fig("ratio warm p95 / bare p95", r"^ratio warm p95 / bare p95: ([\d.]+)x", "x"),
        ),
    ),
    "bench_pull": Spec(
        args=("--size-mib", "64", "--repeat", "2"),
        rounds=2,
        needs=("skopeo", "docker-registry"),
        figures=(
            _fig("pull_artifact 64 MiB", r"^pull_artifact \(verified\):\s+([\d.]+) s", "s"),
            _fig("ratio skopeo / pull", r"^ratio \(skopeo / pull\): ([\d.]+)x", "x", True),
        ),
    ),
    "bench_update": Spec(
        rounds=2,
        root=True,
        needs=("docker-registry",),
        figures=(
            _fig("update time", r"^update time \(pull.*?: ([\d.]+) s", "s"),
            _fig("first pull (reference)", r"^first pull \+ attach.*, ([\d.]+) s$", "s"),
            _fig("update / full pull", r"^update time.*?([\d.]+)x the full pull", "x"),
        ),
    ),
    "bench_verity": Spec(
        args=("--size-mib", "256", "--repeat", "2", "--no-ceiling", "--no-sha512"),
        rounds=2,
        needs=("fsverity",),
        figures=(
            _fig(
                "ours, defaults 256 MiB",
                r"^ours, defaults \(processes\)\s+([\d.]+) s",
                "s",
            ),
            _fig(
                "ratio to fsverity digest", r"^ratio \(defaults vs fsverity.*: ([\d.]+)x", "x", True
            ),
        ),
    ),
    "bench_composefs": Spec(
        args=("--repeat", "1"),
        rounds=1,
        needs=("mkfs.erofs",),
        figures=(
            _fig("ours: image + object store", r"^ours: image \+ object store\s+([\d.]+)s", "s"),
            _fig("ours: image only", r"^ours: image only \(content hashed\)\s+([\d.]+)s", "s"),
            _fig(
                "1. complete job / mkfs.erofs",
                r"^\s+1\. complete job vs plain: time ([\d.]+)x",
                "x",
            ),
        ),
    ),
    "bench_agent_rss": Spec(
        rounds=2,
        figures=(
            _fig("agent RSS after 120 beats", r"^agent RSS after 120 beats:\s+([\d.]+) MB", "MB"),
            _fig("ratio agent/reference", r"ratio agent/reference ([\d.]+)", "x"),
        ),
    ),
    "bench_platform_start": Spec(
        args=("--runs", "3"),
        rounds=2,
        figures=(
            _fig(
                "serve to first 200 (wall)",
                r"^\s+platform serve --no-tls to first 200\s+([\d.]+)",
                "s",
            ),
            _fig(
                "serve to first 200 (CPU)",
                r"^\s+platform serve --no-tls to first 200\s+[\d.]+\s+([\d.]+)",
                "s",
            ),
            _fig(
                "ratio to fastapi import (CPU)",
                r"ratio start / framework import: .*, ([\d.]+)x CPU",
                "x",
            ),
        ),
    ),
    "bench_leases": Spec(
        args=("--tasks", "1000", "--batch", "1,10b"),
        rounds=1,
        needs=("pg_ctl",),
        figures=(
            _fig(
                "lease max=1 tasks/s", r"^\s+node API max=1, one ack per task\s+(\d+)\s", "/s", True
            ),
            _fig(
                "lease max=10b tasks/s",
                r"^\s+node API max=10, outcomes batched\s+(\d+)\s",
                "/s",
                True,
            ),
            _fig(
                "max=10b / Procrastinate (same run)",
                r"^\s+node API max=10, outcomes batched\s+\d+\s+([\d.]+)",
                "x",
                True,
            ),
            _fig("server CPU per task, max=1", r"round batch1: .* ([\d.]+) ms per task", "ms"),
            _fig("server CPU per task, max=10b", r"round batch10b: .* ([\d.]+) ms per task", "ms"),
            _fig(
                "Procrastinate (reference)",
                r"^\s+Procrastinate 32-concurrency worker\s+(\d+)",
                "/s",
                True,
            ),
        ),
    ),
    "bench_platform": Spec(
        args=("--requests", "100"),
        rounds=1,
        figures=(
            _fig(
                "instance drift req/s (SQLite)",
                r"^\s+instance drift \(30 modules\)\s+([\d.]+)",
                "/s",
                True,
            ),
            _fig(
                "template drift req/s (SQLite)",
                r"^\s+template drift \(20 instances\)\s+([\d.]+)",
                "/s",
                True,
            ),
            _fig(
                "instance drift vs healthz (SQLite)",
                r"^\s+instance drift \(30 modules\)\s+\S+\s+\S+\s+\S+\s+([\d.]+)",
                "x",
                True,
            ),
            _fig(
                "instance drift req/s (PostgreSQL)",
                r"^PostgreSQL:.*\n(?:.*\n)*?\s+instance drift \(30 modules\)\s+([\d.]+)",
                "/s",
                True,
            ),
            _fig(
                "template drift req/s (PostgreSQL)",
                r"^PostgreSQL:.*\n(?:.*\n)*?\s+template drift \(20 instances\)\s+([\d.]+)",
                "/s",
                True,
            ),
            _fig("list versions req/s (SQLite)", r"^\s+list versions\s+([\d.]+)", "/s", True),
        ),
    ),
    "bench_console": Spec(args=("--requests", "10"), rounds=1, needs=("pg_ctl",), timeout=900.0),
}
