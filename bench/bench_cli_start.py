"""Benchmark: how fast the two command lines answer ``--help``.

Run: .venv/bin/python bench/bench_cli_start.py [--runs N]

Starts a fresh interpreter ``--runs`` times (default 10) for each of

- ``python -c pass``                       (reference: the interpreter alone)
- ``powernode --help``
- ``powernode-agent --help``
- ``powernode module --help``, ``powernode system --help`` (the groups users ask next)

and prints the median and best wall time of each, its ratio to the
reference's median in the same run, its median CPU time and its peak RSS. The commands run as
``python -c 'from powernode.cli.main import main; main()'`` (what the console
scripts do, without the entry-point shim's own import of importlib.metadata),
with this checkout's ``src`` first on the path. Targets (issue 12):
``powernode --help`` <= 0.25 s and ``powernode-agent --help`` <= 0.15 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
POWERNODE = "from powernode.cli.main import main; main()"
AGENT = "from powernode.cli.agent import main; main()"
CASES: list[tuple[str, list[str], float | None]] = [
    ("python -c pass", ["-c", "pass"], None),
    ("powernode --help", ["-c", POWERNODE, "--help"], 0.25),
    ("powernode-agent --help", ["-c", AGENT, "--help"], 0.15),
    ("powernode module --help", ["-c", POWERNODE, "module", "--help"], None),
    ("powernode system --help", ["-c", POWERNODE, "system", "--help"], None),
]


def once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall and CPU seconds of one run and its peak RSS in KiB (wait4's own rusage)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv}: exit status {child.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # Interleaved rounds: a burst of load on the (shared) machine hits every case alike.
    times: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    rss: dict[str, int] = {}
    for _ in range(args.runs):
        for name, argv, _ in CASES:
            elapsed, used, rss[name] = once(argv, env)
            times[name].append(elapsed)
            cpu[name].append(used)
    reference = statistics.median(times[CASES[0][0]])
    print(
        f"{'command':<26} {'median':>8} {'best':>8} {'x pass':>7} {'cpu':>8} {'max RSS':>9}  target"
    )
    for name, _, target in CASES:
        median = statistics.median(times[name])
        verdict = ""
        if target is not None:
            ok = median <= target
            verdict = f"<= {target:.2f} s: {'met' if ok else 'NOT met'}"
        print(
            f"{name:<26} {median:>7.3f}s {min(times[name]):>7.3f}s "
            f"{median / reference:>6.1f}x {statistics.median(cpu[name]):>7.3f}s "
            f"{rss[name] / 1024:>7.1f}MB  {verdict}"
        )
    print(
        f"median of {args.runs} runs each, interleaved; cpu = user + system seconds (less "
        f"sensitive than wall time to other load); python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
