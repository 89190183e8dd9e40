"""Compare every benchmark's headline figure between two source trees (issue 14).

Run: .venv/bin/python bench/compare.py [--base-rev f9f55ef | --base DIR] [--new DIR]
                                       [--only a,b] [--rounds N] [--log-dir DIR]

The base tree defaults to a detached ``git worktree`` of ``--base-rev`` (the
session's start, f9f55ef) made under /tmp and removed at the end; the new tree
defaults to this checkout. Each ``bench/bench_*.py`` present in BOTH trees is
run against both, alternating base/new/base/new so both meet the same load on
a shared machine, with ``PYTHONPATH=<tree>/src``, the working directory the
tree, and the bench file taken from the same tree as its sources (a bench may
have changed its own use of the API). Arguments are the same on both sides
(reduced sizes for the slow benches; see BENCHES in _compare_specs.py). Each bench's headline
figure is parsed from its output (a regex per bench); printed per bench: the
base and new figure (median of the rounds), the ratio new/base, and "within
noise" when the ratio lies inside the spread of the repeated runs (the larger
of the two trees' max/min), or within +-10 % when there is a single round.
Benches that exist only in the new tree are listed as "new, no base"; a bench
that cannot run here (no PostgreSQL, no skopeo, no root, ...) is skipped with
its reason. Every run is taken under ``flock /tmp/powernode-bench.lock``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _compare_specs import BENCHES, Spec

HERE = Path(__file__).resolve().parents[1]
LOCK = "/tmp/powernode-bench.lock"
SINGLE_NOISE = 0.10


SKIP_MARKERS = ("skipped", "not installed", "needs root", "needs mkfs.erofs")


@dataclass
class Runs:
    values: dict[str, list[float]] = field(default_factory=dict)
    skipped: str = ""
    failed: str = ""
    seconds: list[float] = field(default_factory=list)


def parse(spec: Spec, out: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for fig in spec.figures:
        m = re.search(fig.pattern, out, re.MULTILINE)
        if m and fig.per_1000:  # e.g. server CPU (cores) / requests per second = CPU s per request
            found[fig.label] = round(float(m.group(2)) / float(m.group(1)) * 1000, 3)
        elif m:
            found[fig.label] = float(next(g for g in m.groups() if g is not None))
    return found


def reason_not_runnable(spec: Spec) -> str:
    if spec.root and os.geteuid() != 0:
        return "needs root (real mounts)"
    missing = [exe for exe in spec.needs if shutil.which(exe) is None]
    return f"missing on this machine: {', '.join(missing)}" if missing else ""


def run_once(
    tree: Path, name: str, spec: Spec, log: Path | None, tag: str
) -> tuple[str, float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [
        "flock",
        "-w",
        "300",
        LOCK,
        sys.executable,
        str(tree / "bench" / f"{name}.py"),
        *spec.args,
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=spec.timeout,
            check=False,
        )
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMEOUT after {spec.timeout:.0f} s"
        code = -1
    elapsed = time.perf_counter() - t0
    if log is not None:
        log.mkdir(parents=True, exist_ok=True)
        (log / f"{name}.{tag}.log").write_text(f"$ {' '.join(argv)}\n{out}")
    return out, elapsed, code


def spread(xs: list[float]) -> float:
    return max(xs) / min(xs) - 1 if len(xs) > 1 and min(xs) > 0 else 0.0


def report(name: str, spec: Spec, base: Runs, new: Runs) -> list[str]:
    rows = []
    for fig in spec.figures:
        b, n = base.values.get(fig.label, []), new.values.get(fig.label, [])
        if not b or not n:
            rows.append(f"  {fig.label:34} not parsed (base {len(b)}, new {len(n)} values)")
            continue
        mb, mn = statistics.median(b), statistics.median(n)
        ratio = mn / mb if mb else float("inf")
        single = len(b) < 2 or len(n) < 2
        noise = SINGLE_NOISE if single else max(spread(b), spread(n))
        inside = 1 / (1 + noise) <= ratio <= 1 + noise
        worse = ratio < 1 if fig.higher_is_better else ratio > 1
        verdict = (
            "within noise" if inside else ("WORSE beyond noise" if worse else "better beyond noise")
        )
        runs = f"base {'/'.join(f'{x:g}' for x in b)}; new {'/'.join(f'{x:g}' for x in n)}"
        rows.append(
            f"  {fig.label:34} {mb:10.3f} {mn:10.3f} {fig.unit:>3} {ratio:6.3f}  "
            f"{verdict} (noise {'+-10% single run' if single else f'{noise:.1%}'}; {runs})"
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--base-rev", default="f9f55ef")
    ap.add_argument("--base", type=Path, help="an existing base tree (instead of --base-rev)")
    ap.add_argument("--new", type=Path, default=HERE)
    ap.add_argument("--only", help="comma-separated bench names (bench_ prefix optional)")
    ap.add_argument("--rounds", type=int, help="override every bench's rounds")
    ap.add_argument("--log-dir", type=Path, help="keep every run's full output here")
    ap.add_argument(
        "--from-logs", type=Path, help="do not run: re-parse a --log-dir of an earlier run"
    )
    args = ap.parse_args()
    new_tree = args.new.resolve()
    tmp = None
    if args.from_logs is not None:
        return compare(Path(f"(logs of {args.base_rev})"), new_tree, args)
    if args.base is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-base-"))
        base_tree = tmp / "tree"
        subprocess.run(
            [
                "git",
                "-C",
                str(HERE),
                "worktree",
                "add",
                "-q",
                "--detach",
                str(base_tree),
                args.base_rev,
            ],
            check=True,
        )
    else:
        base_tree = args.base.resolve()
    try:
        return compare(base_tree, new_tree, args)
    finally:
        if tmp is not None:
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "remove", "--force", str(base_tree)],
                check=False,
            )
            shutil.rmtree(tmp, ignore_errors=True)


def compare(base_tree: Path, new_tree: Path, args: argparse.Namespace) -> int:
    if args.from_logs is not None:
        base_names = set(
            subprocess.run(
                ["git", "-C", str(HERE), "ls-tree", "--name-only", args.base_rev, "bench/"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
        )
        base_names = {Path(p).stem for p in base_names if Path(p).name.startswith("bench_")}
    else:
        base_names = {p.stem for p in (base_tree / "bench").glob("bench_*.py")}
    new_names = {p.stem for p in (new_tree / "bench").glob("bench_*.py")}
    only = {
        n if n.startswith("bench_") else f"bench_{n}" for n in (args.only or "").split(",") if n
    }
    order = [n for n in BENCHES if n in base_names & new_names] + sorted(
        (base_names & new_names) - set(BENCHES)
    )
    if only:
        order = [n for n in order if n in only]
    for tree in (
        (base_tree, new_tree) if args.from_logs is None else ()
    ):  # bytecode on both sides, as an installed package has it
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "src")], check=False)
    print(f"base: {base_tree} ({args.base_rev if args.base is None else 'given'}); new: {new_tree}")
    print(f"python {sys.version.split()[0]}; usable cpus {len(os.sched_getaffinity(0))}; "
          f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print("runs alternate base/new/base/new so both trees share the machine's (varying) load")
    results: list[str] = []
    for name in order:
        spec = BENCHES.get(name, Spec())
        rounds = args.rounds or spec.rounds
        why = reason_not_runnable(spec)
        if why:
            results.append(f"{name}: SKIPPED ({why})")
            print(results[-1], flush=True)
            continue
        if not spec.figures:
            results.append(f"{name}: SKIPPED (no headline parser; run by hand)")
            print(results[-1], flush=True)
            continue
        side = {"base": Runs(), "new": Runs()}
        for r in range(rounds):
            for label, tree in (("base", base_tree), ("new", new_tree)):
                runs = side[label]
                if runs.skipped or runs.failed:
                    continue
                tag = f"{label}{r + 1}"
                if args.from_logs is not None:  # re-read an earlier run's outputs
                    saved = args.from_logs / f"{name}.{tag}.log"
                    if not saved.is_file():
                        continue
                    out, secs, code = saved.read_text(), 0.0, 0
                else:
                    out, secs, code = run_once(tree, name, spec, args.log_dir, tag)
                runs.seconds.append(secs)
                figs = parse(spec, out)
                low = out.lower()
                if not figs and any(m in low for m in SKIP_MARKERS):
                    runs.skipped = out.strip().splitlines()[-1][:200]
                elif code != 0 and not figs:
                    runs.failed = (
                        f"exit {code}: {out.strip().splitlines()[-1][:200] if out.strip() else ''}"
                    )
                for k, v in figs.items():
                    runs.values.setdefault(k, []).append(v)
                print(
                    f"  {name} {label} round {r + 1}: {secs:.0f} s, exit {code}, {figs}", flush=True
                )
        b, n = side["base"], side["new"]
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        if b.skipped or n.skipped:
            results.append(f"{name}: SKIPPED ({b.skipped or n.skipped})")
        elif b.failed or n.failed:
            results.append(f"{name}: FAILED (base: {b.failed or 'ok'}; new: {n.failed or 'ok'})")
        else:
            where = "" if args.from_logs is not None else f", load after {load}"
            head = f"{name} (runs: base {len(b.seconds)}, new {len(n.seconds)}{where}):"
            cols = f"  {'figure':34} {'base':>10} {'new':>10} {'':>3} {'ratio':>6}  (new/base)"
            results.append("\n".join([head, cols, *report(name, spec, b, n)]))
        print(results[-1], flush=True)
    for name in sorted(new_names - base_names):
        results.append(f"{name}: new, no base (did not exist at the base)")
    for name in sorted(base_names - new_names):
        results.append(f"{name}: removed in the new tree")
    print("\n==== summary ====")
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
