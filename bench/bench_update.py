"""Benchmark: a module update where 95 % of the objects are unchanged, through a real registry.

Run as root: .venv/bin/python bench/bench_update.py [--objects 2000] [--changed 0.05]

Builds version 1.0.0 of a module of --objects files (seeded contents, 4-32 KiB
each, so every file is an object), and 1.0.1 in which --changed of them have
new contents. Both are pushed and signed to Debian's docker-registry on
127.0.0.1 (the test fixture). A node (a temporary root and state directory)
then syncs, through the agent's real puller (signature under a key policy,
pull by the verified digest, mount-time verification, restack):

1. the desired set with 1.0.0: the full download, timed (the reference);
2. the desired set with 1.0.1: the update, timed.

Prints the bytes the update downloaded beside the full artifact's object
bytes and the changed objects' bytes (they must be equal: only what changed
is fetched), the image size (fetched whole: it is the metadata), and both
times with their ratio. Every mount is undone. The machine is shared: the
load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.* helpers

from tests.oci.registry_fixture import run_registry
from tests.publish.artifacts import make_artifact, object_bytes

from powernode.agent.modules import NodeLayout
from powernode.agent.modules.reconcile import PublishPuller
from powernode.agent.modules.service import ModuleService
from powernode.agent.modules.union import teardown
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import generate_private_key, public_key_pem


def tree(count: int, changed: set[int], rng: random.Random) -> dict[str, bytes]:
    sizes = [rng.randrange(4 << 10, 32 << 10) for _ in range(count)]
    files = {}
    for i, size in enumerate(sizes):
        seed = f"v2-{i}" if i in changed else f"v1-{i}"
        files[f"usr/lib/app/d{i % 50:02d}/f{i:05d}.bin"] = object_bytes(seed, size)
    return files


def objects_of(artifact: Path) -> dict[str, int]:
    root = artifact / "objects"
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def desired(name: str, ref: str, digest: str, pub: bytes, version: str) -> dict[str, Any]:
    entry = {
        "name": name,
        "version": version,
        "composefs_digest": digest,
        "effective_priority": 100,
        "reference": ref,
        "trust_policy": {"cosign_public_key": pub.decode()},
    }
    return {"modules": [entry], "composition": None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--changed", type=float, default=0.05)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_update: needs root (real mounts)", file=sys.stderr)
        return 2
    rng = random.Random(20240601)  # noqa: S311 - reproducible sizes, not security
    changed = set(rng.sample(range(args.objects), round(args.objects * args.changed)))
    with tempfile.TemporaryDirectory(prefix="bench-update-") as d:
        tmp = Path(d)
        # The same seed for both trees: the same sizes, so only contents differ.
        t1 = tree(args.objects, set(), random.Random(1))  # noqa: S311
        t2 = tree(args.objects, changed, random.Random(1))  # noqa: S311
        v1 = make_artifact(tmp / "v1", t1, name="app")
        v2 = make_artifact(tmp / "v2", t2, name="app", version="1.0.1")
        o1, o2 = objects_of(v1), objects_of(v2)
        image = (v2 / "image.cfs").stat().st_size
        cfs = {
            v: json.loads((art / "module.json").read_text())["composefs_digest"]
            for v, art in (("1.0.0", v1), ("1.0.1", v2))
        }
        new = {k: v for k, v in o2.items() if k not in o1}
        key = generate_private_key()
        pub = public_key_pem(key)
        layout = NodeLayout(root=tmp / "root", state=tmp / "state")
        with run_registry(tmp / "registry") as running:
            host = running.url.removeprefix("http://")
            refs = {}
            with DistributionRegistry(running.url) as reg:
                for art, version in ((v1, "1.0.0"), (v2, "1.0.1")):
                    ref = parse_reference(f"{host}/bench/app:{version}")
                    push_artifact(reg, ref, art)
                    sign_artifact(reg, ref, key)
                    refs[version] = str(ref)
            puller = PublishPuller()
            service = ModuleService(layout, puller, lambda k, s, p: None)
            try:
                t0 = time.perf_counter()
                first = service.sync(
                    lambda: desired("app", refs["1.0.0"], cfs["1.0.0"], pub, "1.0.0")
                )
                full_time = time.perf_counter() - t0
                full_bytes = puller.last["app"].bytes_downloaded
                assert first.ok and first.changed, first.refusals
                t0 = time.perf_counter()
                second = service.sync(
                    lambda: desired("app", refs["1.0.1"], cfs["1.0.1"], pub, "1.0.1")
                )
                update_time = time.perf_counter() - t0
                assert second.ok and second.changed, second.refusals
                pulled = puller.last["app"]
                sample = next(iter(f for f in sorted(v2.with_name("v2.src").rglob("*.bin"))))
                rel = sample.relative_to(v2.with_name("v2.src"))
                assert (layout.root / rel).read_bytes() == sample.read_bytes()
            finally:
                teardown(layout)
    load = os.getloadavg()
    print(f"module: {args.objects} objects, {sum(o2.values()):,} object bytes; "
          f"{len(new)} changed ({args.changed:.0%}), {sum(new.values()):,} bytes")  # fmt: skip
    print(f"first pull + attach (reference): {full_bytes:,} bytes downloaded, {full_time:.2f} s")
    print(
        f"update: {pulled.bytes_downloaded:,} bytes downloaded "
        f"(full artifact {sum(o2.values()):,}, changed objects {sum(new.values()):,}; "
        f"{pulled.objects_fetched} fetched, {pulled.objects_reused} reused; image {image:,} bytes)"
    )
    print(f"update time (pull + verify + attach + restack): {update_time:.2f} s, "
          f"{update_time / full_time:.2f}x the full pull")  # fmt: skip
    # The pull coalesces neighbouring objects of a pack into one Range request and reads
    # through gaps of up to 64 KiB (docs/publish.md): the excess over the changed bytes is
    # unchanged bytes between changed objects, bounded by 64 KiB per changed object.
    extra = pulled.bytes_downloaded - sum(new.values())
    share = pulled.bytes_downloaded / sum(o2.values())
    print(f"read through gaps between changed objects: {extra:,} bytes; of the full: {share:.1%}")
    ok = pulled.objects_fetched == len(new) and 0 <= extra <= len(new) * (64 << 10)
    print(f"only the changed objects fetched: {'yes' if ok else 'NO'}; load {load[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
