"""Benchmark: LocalQemuProvider, provision → guest /init → fw-cfg seed read → terminate, under TCG.

Run: .venv/bin/python bench/bench_qemu_boot.py [BOOTS]
Boots the tests' guest (Debian's 6.12 kernel, a busybox initramfs that
prints the fw-cfg items; tests/platform/qemu/guest.py) BOOTS times (default
5) through the provider and prints, per phase, p50/p95 host seconds from
the start of ``provision``: QEMU set up (``provision`` returned), ``/init``
running, the seed bundle read from fw-cfg, and how long ``terminate``
took. The kernel is the PVH ``vmlinux``; the reference, measured in the
same run, is the same boots with the compressed ``vmlinuz`` (what a
bzImage-only image would give), and the ratio is printed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.platform.qemu import guest

from powernode.platform.services.providers import ProvisionRequest
from powernode.platform.services.qemu_provider import LocalQemuProvider, QemuConfig

PHASES = ("qemu set up", "/init", "seed read", "terminate")
MARKS = ("powernode-test: boot", "powernode-test: seed-end")


def one_boot(provider: LocalQemuProvider) -> dict[str, float]:
    iid = str(uuid.uuid4())
    t0 = time.monotonic()
    provider.provision(ProvisionRequest(iid, "n", "h", "t", "pnb_bench"))
    out = {"qemu set up": time.monotonic() - t0}
    deadline = t0 + 120
    try:
        for phase, mark in zip(("/init", "seed read"), MARKS, strict=True):
            while mark.encode() not in provider.console(iid, 1 << 20):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no {mark!r} within 120 s")
                time.sleep(0.02)
            out[phase] = time.monotonic() - t0
    finally:
        t1 = time.monotonic()
        provider.terminate(iid)
        out["terminate"] = time.monotonic() - t1
    return out


def series(image: Path, state: Path, boots: int) -> dict[str, list[float]]:
    provider = LocalQemuProvider(
        QemuConfig(
            image_dir=image,
            state_dir=state,
            platform_url="http://10.0.2.2:9",
            accel="tcg",
            memory_mb=256,
            persist_disk_mb=64,
        )
    )
    runs = [one_boot(provider) for _ in range(boots)]
    return {p: [r[p] for r in runs] for p in PHASES}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    boots = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="bench-qemu-") as tmp:
        root = Path(tmp)
        pvh = series(guest.image_dir(root / "pvh", pvh=True), root / "s1", boots)
        bz = series(guest.image_dir(root / "bz", pvh=False), root / "s2", boots)
    print(f"LocalQemuProvider under TCG, {boots} boots each, host seconds from provision():")
    print(f"{'phase':<14}{'vmlinux p50':>12}{'p95':>8}{'vmlinuz p50':>13}{'p95':>8}{'ratio':>8}")
    for p in PHASES:
        a, b = statistics.median(pvh[p]), statistics.median(bz[p])
        print(
            f"{p:<14}{a:>12.2f}{pct(pvh[p], 0.95):>8.2f}{b:>13.2f}{pct(bz[p], 0.95):>8.2f}"
            f"{a / b if b else float('nan'):>8.2f}"
        )


if __name__ == "__main__":
    main()
