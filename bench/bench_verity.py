"""Benchmark: fsverity_digest_file() against fsverity-utils' `fsverity digest`.

Run: .venv/bin/python bench/bench_verity.py [--size-mib 1024] [--repeat 3]
Writes a file of random content in a temp dir (deleted afterwards), reads it
once to warm the page cache, then times `fsverity digest` and
fsverity_digest_file() (default threads, and one thread for reference), best
of --repeat each. Checks the digests are equal, prints MB/s and the ratio,
and whether the target (>= 1.5x `fsverity digest` with the default thread
count) is met. Prints the load average too: the machine is shared, so read
the figures with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from powernode.run import run
from powernode.verity.fsverity import format_digest, fsverity_digest_file

TARGET_RATIO = 1.5
_WRITE_CHUNK = 16 << 20


def best_of(repeat: int, fn: Callable[[], str]) -> tuple[float, str]:
    best = float("inf")
    result = ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        done = 0
        while done < size:
            n = min(_WRITE_CHUNK, size - done)
            f.write(os.urandom(n))
            done += n


def warm(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        buf = bytearray(_WRITE_CHUNK)
        while f.readinto(buf):
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tool = shutil.which("fsverity")
    if tool is None:
        print("fsverity is not installed (scripts/install-system-deps.sh installs it)")
        return 2
    size = args.size_mib << 20
    cpus = os.cpu_count() or 1
    print(f"cpus: {cpus}; load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-verity-") as tmp:
        path = Path(tmp) / "data"
        make_file(path, size)
        warm(path)

        def tool_digest() -> str:
            return run([tool, "digest", path]).stdout.decode().split(" ", 1)[0]

        def ours(threads: int | None) -> Callable[[], str]:
            return lambda: format_digest(fsverity_digest_file(path, threads=threads))

        t_tool, d_tool = best_of(args.repeat, tool_digest)
        t_ours, d_ours = best_of(args.repeat, ours(None))
        t_one, d_one = best_of(args.repeat, ours(1))
    print(f"load average after: {os.getloadavg()}")
    if not d_tool == d_ours == d_one:
        print(f"DIGESTS DIFFER: fsverity {d_tool}, ours {d_ours}, ours/1 thread {d_one}")
        return 1
    print(f"file: {args.size_mib} MiB, digest {d_tool}")
    for label, seconds in [
        ("fsverity digest", t_tool),
        (f"fsverity_digest_file threads={cpus}", t_ours),
        ("fsverity_digest_file threads=1", t_one),
    ]:
        print(f"{label:40s} {seconds:7.3f} s  {size / seconds / 1e6:8.0f} MB/s")
    ratio = t_tool / t_ours
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(
        f"ratio (threads={cpus} vs fsverity digest): {ratio:.2f}x; 1 thread: {t_tool / t_one:.2f}x"
    )
    print(f"target >= {TARGET_RATIO}x: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
