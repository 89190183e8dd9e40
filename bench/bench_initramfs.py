"""Benchmark: our initramfs build (busybox + 90powernode) against `dracut --no-hostonly`.

Run: .venv/bin/python bench/bench_initramfs.py [--repeat 3] [--workdir DIR]
(as root; under ``flock /tmp/powernode-bench.lock``).

Both build for the same kernel package (Debian's 6.12, ``linux-image-6.12.*
+deb12-amd64-unsigned``), in the same run:

- ours: ``powernode image build --variant kernel-initrd`` (the whole variant:
  kernel, initramfs, manifest, digests), warm: the .debs and the kernel's
  module closure already cached, as in a rebuild. Best of --repeat.
- dracut: Debian's dracut-core 059 inside a target root made by mmdebstrap
  (never on the host), ``dracut --no-hostonly --add powernode`` (its default
  modules plus ours), warm: the root made and dracut run once before timing.
  Best of --repeat.

Targets (issue 15): ours <= 15 s warm and <= 30 MB. Prints both figures and
the ratios dracut/ours for time and size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from powernode.image.build import ARCHES, build
from powernode.image.debs import fetch, newest_name
from powernode.image.dracut_root import make_root, run_dracut
from powernode.toolchain.build.packages import DEBS_DIR, default_cache_dir


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    cache = default_cache_dir()
    with tempfile.TemporaryDirectory(prefix="bench-initramfs-", dir=args.workdir) as d:
        work = Path(d)
        out = work / "ours" / "amd64"
        build("kernel-initrd", "amd64", out, cache=cache)  # warm the caches
        ours_s = _best(lambda: build("kernel-initrd", "amd64", out, cache=cache), args.repeat)
        ours_mb = (out / "initramfs.cpio").stat().st_size / 1e6

        deb = fetch(newest_name(ARCHES["amd64"].kernel_package), "amd64", cache / DEBS_DIR)
        release = deb.name.removeprefix("linux-image-").removesuffix("-unsigned")
        t0 = time.perf_counter()
        root = make_root(work / "root", deb, release, cache / DEBS_DIR)
        setup_s = time.perf_counter() - t0
        dracut_args = ["--no-hostonly", "--add", "powernode"]
        run_dracut(root, release, "initrd.img", dracut_args)  # warm
        dracut_s = _best(lambda: run_dracut(root, release, "initrd.img", dracut_args), args.repeat)
        dracut_mb = (root / "initrd.img").stat().st_size / 1e6

    print(f"kernel {release}, best of {args.repeat}, warm")
    print(
        f"ours   (powernode image build kernel-initrd): {ours_s:6.2f} s  {ours_mb:6.1f} MB "
        "(uncompressed newc)"
    )
    print(
        f"dracut --no-hostonly --add powernode:         {dracut_s:6.2f} s  {dracut_mb:6.1f} MB "
        f"(its default compression; target root made in {setup_s:.0f} s, not counted)"
    )
    print(f"ratio dracut/ours: time {dracut_s / ours_s:.2f}x, size {dracut_mb / ours_mb:.2f}x")
    print(
        f"targets: ours <= 15 s warm ({'met' if ours_s <= 15 else 'MISSED'}), "
        f"<= 30 MB ({'met' if ours_mb <= 30 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
