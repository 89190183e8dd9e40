"""Benchmark: compose() of 30 modules with 100,000 paths, against a plain set union.

Run: .venv/bin/python bench/bench_compose.py [--against OTHER/src]
Prints both times (best of 5), their ratio, and whether compose() meets the
target of <= 1 s on one core. The data is seeded, so runs are comparable.

``--against`` times another tree's compose() too (e.g. main's
``/work/main/src``), in a child process with that tree first on the path,
interleaved with this tree's runs so both see the same machine, and prints
both figures and their ratio (this tree / the other; <= 1.0 is not slower),
and whether both trees composed the same output (SHA-256 of ``to_dict()``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

from powernode.core.compose import ModuleLayer, compose
from powernode.core.globs import with_parents
from powernode.core.priority import Variety

MODULES = 30
TOTAL_PATHS = 100_000
OVERLAP = 0.10  # share of each module's files also shipped by another module
TARGET_S = 1.0
SEED = 3


def _pkg_paths(rnd: random.Random, pkg: str, n: int) -> list[str]:
    """Realistic Debian-ish file paths for one package."""
    out: set[str] = set()
    kinds = [
        lambda: (
            f"/usr/lib/python3/dist-packages/{pkg}/{rnd.choice(['core', 'io', 'net', 'util'])}"
            f"/{rnd.choice(['sub', 'impl', 'tests'])}/m{rnd.randrange(10_000)}.py"
        ),
        lambda: f"/usr/share/doc/{pkg}/examples/ex{rnd.randrange(5_000)}.txt",
        lambda: f"/usr/lib/x86_64-linux-gnu/{pkg}/plugins/lib{pkg}-p{rnd.randrange(5_000)}.so",
        lambda: (
            f"/usr/share/locale/{rnd.choice(['de', 'fr', 'ja', 'pt_BR'])}/LC_MESSAGES/"
            f"{pkg}{rnd.randrange(3_000)}.mo"
        ),
        lambda: f"/usr/share/man/man{rnd.randrange(1, 9)}/{pkg}-{rnd.randrange(3_000)}.gz",
        lambda: f"/etc/{pkg}/conf.d/{rnd.randrange(1_000):03d}-{pkg}.conf",
    ]
    while len(out) < n:
        out.add(rnd.choice(kinds)())
    return sorted(out)


def make_layers(rnd: random.Random) -> list[ModuleLayer]:
    pkgs = [f"pkg{i:02d}" for i in range(MODULES)]
    per_module_files = int(TOTAL_PATHS * 0.885 / MODULES)  # parents bring the rest
    own = {p: _pkg_paths(rnd, p, per_module_files) for p in pkgs}
    layers = []
    for i, pkg in enumerate(pkgs):
        files = list(own[pkg])
        # ~10% of the files are also in some other module (a shared library,
        # a config both ship): these give the union winners and shadows.
        other = pkgs[(i + 1 + rnd.randrange(MODULES - 1)) % MODULES]
        files += rnd.sample(own[other], int(per_module_files * OVERLAP))
        files += ["/etc/passwd", f"/etc/{pkg}/{pkg}.conf", f"/usr/bin/{pkg}"]
        protected = [f"/etc/{pkg}/{pkg}.conf", f"/usr/bin/{pkg}"]
        if i == 0:
            protected += ["/etc/passwd", "/etc/shadow"]
        variety, parent = Variety.SUBSCRIPTION, None
        mask = ["*.pyc", f"/usr/share/doc/{pkg}/changelog*", "__pycache__/"]
        if i == MODULES - 1:  # a config module taking over its parent's file
            variety, parent = Variety.CONFIG, pkgs[0]
            mask.append(f"/etc/{pkgs[0]}/{pkgs[0]}.conf")
            files.append(f"/etc/{pkgs[0]}/{pkgs[0]}.conf")
        layers.append(
            ModuleLayer(
                name=pkg,
                priority=100 + (i % 10) * 10 + (3 if variety is Variety.CONFIG else 0),
                variety=variety,
                parent=parent,
                files=tuple(with_parents(files)),
                mask=tuple(mask),
                protected=tuple(protected),
            )
        )
    return layers


def best_of(n: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _child_time() -> int:
    """``--child``: print compose()'s best of 5 on this interpreter's path, as JSON."""
    layers = make_layers(random.Random(SEED))  # noqa: S311 - seeded test data, not secrets
    out = json.dumps(compose(layers).to_dict(), sort_keys=True).encode()
    digest = hashlib.sha256(out).hexdigest()
    print(json.dumps({"compose_s": best_of(5, lambda: compose(layers)), "output": digest}))
    return 0


def _time_tree(src: str) -> tuple[float, str]:
    """compose()'s best of 5 with ``src`` first on the path (a fresh interpreter), and
    the SHA-256 of its output."""
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, __file__, "--child"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    doc = json.loads(out.stdout.splitlines()[-1])
    return float(doc["compose_s"]), str(doc["output"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="SRC", help="another tree's src/ to time too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_time()
    layers = make_layers(random.Random(SEED))  # noqa: S311 - seeded test data, not secrets
    total = sum(len(m.files) for m in layers)

    def set_union() -> set[str]:
        out: set[str] = set()
        for m in layers:
            out.update(m.files)
        return out

    union = set_union()
    c = compose(layers)
    t_compose = best_of(5, lambda: compose(layers))
    t_set = best_of(5, set_union)
    print(f"modules: {len(layers)}, paths: {total} ({len(union)} distinct)")
    print(
        f"composition: {len(c.union)} union entries, {len(c.dropped)} dropped, "
        f"{len(c.takeovers)} takeovers"
    )
    print(f"compose():      {t_compose * 1000:8.1f} ms (best of 5)")
    print(f"set union:      {t_set * 1000:8.1f} ms (best of 5)")
    print(f"ratio:          {t_compose / t_set:8.1f}x")
    if args.against:
        # Alternate the two trees, three rounds each, and keep each one's best:
        # a neighbour's load then hits both alike.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ours, theirs, outputs = [], [], set()
        for _ in range(3):
            for src, times in ((os.path.join(here, "src"), ours), (args.against, theirs)):
                t, output = _time_tree(src)
                times.append(t)
                outputs.add(output)
        t_ours, t_theirs = min(ours), min(theirs)
        print(f"this tree:      {t_ours * 1000:8.1f} ms (best of 15, child processes)")
        print(f"against:        {t_theirs * 1000:8.1f} ms ({args.against})")
        print(f"ratio:          {t_ours / t_theirs:8.2f}x (this tree / against)")
        print(f"same output:    {'yes' if len(outputs) == 1 else 'NO'} (SHA-256 of to_dict())")
        if len(outputs) != 1:
            return 1
    met = t_compose <= TARGET_S
    print(f"target <= {TARGET_S:.0f} s: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
