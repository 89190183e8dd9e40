"""Benchmark: pull a 256 MiB module from a local registry, against `skopeo copy`.

Run: .venv/bin/python bench/bench_pull.py [--size-mib 256] [--repeat 2]

Builds an artifact (docs/artifact.md) of --size-mib of objects with the
composefs writer, starts Debian's docker-registry on 127.0.0.1 (the test
fixture), pushes it, then times, best of --repeat, alternating the two so
both meet the same load, each into a fresh destination with the registry's
files in the page cache:

* ``skopeo copy docker://… dir:…`` of the same manifest: downloads the
  config and every layer whole (the packs, index, image, SBOM) into a
  handful of files, verifies each blob's sha256, fsyncs nothing;
* ``pull_artifact`` into a new ModuleStore: the same manifest, config,
  index and image (sha256 each; the image's fs-verity digest against the
  composefs digest and its object set against the index), then every
  object by ranged reads of the packs into its own file, each checked
  against its fs-verity name before it gets that name, all made durable
  (syncfs) before they are named.

Prints both, and the ratio skopeo time / pull time (target >= 1.0). Then a
second module sharing 90 % of its objects with the first is pulled into
the same store: the bytes downloaded must be the other 10 % only. The
machine is shared: the load average is printed with the figures.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.* helpers

from tests.oci.registry_fixture import run_registry
from tests.publish.artifacts import make_artifact, object_bytes

from powernode.oci.distribution import DistributionRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import FetchTuning, ModuleStore, pull_artifact, push_artifact
from powernode.run import run

TARGET_RATIO = 1.0
OBJECT_SIZES = (16 << 10, 64 << 10, 128 << 10, 512 << 10)  # a mix, 180 KiB average


def files_for(total: int, prefix: str, seed: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    used = 0
    i = 0
    while used < total:
        size = min(OBJECT_SIZES[i % len(OBJECT_SIZES)], total - used)
        size = max(size, 65)
        files[f"{prefix}/d{i % 64:02d}/f{i:05d}"] = object_bytes(f"{seed}-{i}", size)
        used += size
        i += 1
    return files


def best_of_alternating(
    repeat: int, first: Callable[[int], object], second: Callable[[int], object]
) -> tuple[float, float]:
    """Best times of ``first`` and ``second``, run in turns (shared-machine fairness)."""
    best = [float("inf"), float("inf")]
    for attempt in range(repeat):
        for i, fn in enumerate((first, second)):
            os.sync()  # neither side pays for the other's dirty pages
            start = time.perf_counter()
            fn(attempt)
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=FetchTuning().workers)
    args = parser.parse_args()
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        print("skopeo is not installed (scripts/install-system-deps.sh)")
        return 1
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp_name:
        tmp = Path(tmp_name)
        files_a = files_for(size, "usr/lib/a", "a")
        names = sorted(files_a)
        keep = names[: len(names) * 9 // 10]
        files_b = {n: files_a[n] for n in keep}
        files_b.update(files_for(size - sum(len(files_a[n]) for n in keep), "usr/lib/b", "b"))
        art_a = make_artifact(tmp / "a", files_a, name="bench-a")
        art_b = make_artifact(tmp / "b", files_b, name="bench-b")
        del files_a, files_b
        with run_registry(tmp / "registry") as running, DistributionRegistry(running.url) as reg:
            ref_a = parse_reference("bench/a:1.0.0")
            ref_b = parse_reference("bench/b:1.0.0")
            push_artifact(reg, ref_a, art_a)
            push_artifact(reg, ref_b, art_b)
            host = running.url.removeprefix("http://")

            def skopeo_copy(attempt: int) -> None:
                out = tmp / f"skopeo-{attempt}"
                run(
                    [skopeo, "copy", "--src-tls-verify=false", "--quiet",
                     f"docker://{host}/bench/a:1.0.0", f"dir:{out}"],
                    timeout=600,
                )  # fmt: skip

            tuning = FetchTuning(workers=args.workers)

            def pull(attempt: int) -> None:
                pull_artifact(reg, ref_a, ModuleStore(tmp / f"store-{attempt}"), tuning=tuning)

            skopeo_copy(99)  # warm the registry's files in the page cache
            t_skopeo, t_pull = best_of_alternating(args.repeat, skopeo_copy, pull)
            store = ModuleStore(tmp / "store-0")
            second = pull_artifact(reg, ref_b, store, tuning=tuning)
        load = os.getloadavg()[0]
        mib = size / (1 << 20)
        ratio = t_skopeo / t_pull
        print(f"artifact: {mib:.0f} MiB of objects, {len(names)} files; load average {load:.2f}")
        print(
            f"skopeo copy docker:// dir:   {t_skopeo:6.2f} s  {mib / t_skopeo:7.1f} MiB/s"
            "  (whole blobs, sha256, no fsync)"
        )
        print(
            f"pull_artifact (verified):    {t_pull:6.2f} s  {mib / t_pull:7.1f} MiB/s"
            f"  (ranged reads, {args.workers} workers; fs-verity of every object and the "
            "composefs digest; durable before named)"
        )
        print(f"ratio (skopeo / pull): {ratio:.2f}x (target >= {TARGET_RATIO}x)")
        new_bytes = size - sum(
            p.stat().st_size for p in (art_a / "objects").rglob("*") if p.is_file()
            and (art_b / "objects" / p.relative_to(art_a / "objects")).is_file()
        )  # fmt: skip
        gaps = second.bytes_downloaded - new_bytes
        print(
            f"second module (90 % shared, {size} bytes of objects): downloaded "
            f"{second.bytes_downloaded} bytes ({second.bytes_downloaded / size:.1%}) = its "
            f"{second.objects_fetched} new objects' {new_bytes} bytes + {gaps} read through "
            f"gaps ({gaps / new_bytes:.1%}); {second.objects_reused} objects reused"
        )
        ok = ratio >= TARGET_RATIO and second.bytes_downloaded <= new_bytes * 1.05
        print("target met" if ok else "target NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
