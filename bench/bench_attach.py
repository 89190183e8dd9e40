"""Benchmark: attach (verify + mount + restack) of a 5,000-file module already in the store.

Run as root: .venv/bin/python bench/bench_attach.py
A 5,000-file module (seeded contents, 65 B - 8 KiB per file, so every file
is an object) is built into a temporary store, a small base module is
attached, then the big module is attached and detached repeatedly; only the
attach is timed. Prints p50/p95 of

- warm attach: same boot, objects sealed by an earlier full check (only
  each object's stat is compared; the image is re-hashed every time),
- cold attach (``deep=True``): every object re-hashed, the image parsed,
- the reference measured in the same run: the bare mounts (EROFS image +
  overlay + unmount) without verification or state,

and whether warm attach meets the target p95 <= 150 ms. Every mount is undone.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from powernode.agent.modules import NodeLayout, attach, detach
from powernode.agent.modules.union import teardown
from powernode.mount.overlay import mount_stack
from powernode.node.store import image_digest
from powernode.verity.composefs.writer import build_image

FILES = 5_000
WARM_RUNS = 30
COLD_RUNS = 5
TARGET_P95_S = 0.150
SEED = 7


def build(layout: NodeLayout, name: str, files: dict[str, bytes]) -> str:
    src = layout.state.parent / f"src-{name}"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    result = build_image(src, None, digest_store=layout.store.objects_dir)
    image = layout.state.parent / f"{name}.cfs"
    build_image(src, image)
    layout.store.put_image(image.read_bytes(), image_digest(result.digest))
    return f"sha256:{result.digest}"


def pct(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(label: str, xs: list[float]) -> str:
    return (
        f"{label:<24} p50 {statistics.median(xs) * 1000:7.1f} ms   "
        f"p95 {pct(xs, 95) * 1000:7.1f} ms   (n={len(xs)})"
    )


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (real EROFS and overlay mounts)", file=sys.stderr)
        return 2
    from powernode.agent.modules.state import ModuleSpec

    rnd = random.Random(SEED)  # noqa: S311 - seeded test data, not secrets
    with tempfile.TemporaryDirectory(prefix="bench-attach-") as tmp:
        t = Path(tmp)
        layout = NodeLayout(root=t / "root", state=t / "state", boot_id="bench")
        try:
            files = {
                f"usr/lib/big/d{i % 64:02d}/f{i:05d}": rnd.randbytes(rnd.randint(65, 8192))
                for i in range(FILES)
            }
            t0 = time.perf_counter()
            big_digest = build(layout, "big", files)
            base_digest = build(layout, "base", {"etc/os-release": b"ID=powernode\n" * 8})
            print(f"built a {FILES}-file module in {time.perf_counter() - t0:.1f} s")
            size = sum(len(v) for v in files.values())
            print(f"objects: {FILES}, {size / 1e6:.1f} MB")
            attach(layout, ModuleSpec("base", base_digest, 10))
            big = ModuleSpec("big", big_digest, 20)

            def timed(deep: bool) -> float:
                t0 = time.perf_counter()
                attach(layout, big, deep=deep)
                dt = time.perf_counter() - t0
                assert (layout.root / "usr/lib/big/d00/f00000").read_bytes() == files[
                    "usr/lib/big/d00/f00000"
                ]
                detach(layout, "big")
                return dt

            cold = [timed(True) for _ in range(COLD_RUNS)]
            warm = [timed(False) for _ in range(WARM_RUNS)]
            image = layout.store.image_path(image_digest(big_digest))

            def bare() -> float:
                t0 = time.perf_counter()
                with mount_stack() as stack:
                    low = stack.image(image, t / "ref" / "layer")
                    stack.overlay(t / "ref" / "union", [low], [layout.store.objects_dir])
                return time.perf_counter() - t0

            ref = [bare() for _ in range(WARM_RUNS)]
        finally:
            teardown(layout)
    print(line("attach, warm (sealed)", warm))
    print(line("attach, cold (deep)", cold))
    print(line("bare mounts (reference)", ref))
    print(f"ratio warm p95 / bare p95: {pct(warm, 95) / pct(ref, 95):.1f}x")
    met = pct(warm, 95) <= TARGET_P95_S
    print(f"target p95 <= {TARGET_P95_S * 1000:.0f} ms (warm): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
