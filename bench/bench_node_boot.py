"""Benchmark: a node's boot under TCG, QEMU start → first heartbeat accepted, per phase.

Run: .venv/bin/python bench/bench_node_boot.py [BOOTS]
(``POWERNODE_SMOKE_SYSTEM_BASE=DIR`` reuses a built system-base artifact; otherwise it
is built first, as ``make smoke`` does.)

The real thing, as tests/image/test_smoke_boot.py runs it: the kernel-initrd image,
system-base, the platform with ``provider = "qemu"`` (SQLite here: the database is not
what a boot waits on). BOOTS (default 5) fresh instances are provisioned one after the
other (a first boot: fs-verity enabled on the whole store), then one instance is
rebooted BOOTS times (verity kept on its persist disk). Phases, host seconds after
``provision``/``reboot`` returned, read through the API: the initramfs's /init, identity
claimed, root composed, switch_root, agent started, first heartbeat accepted (the kernel
runs ``quiet``: its first line on the console is our ``/init``'s).

Reference, measured in the same run: the tests' minimal guest (the same kernel with a
busybox initramfs that only reaches ``/init``, tests/platform/qemu/guest.py) through the
same provider; printed beside the first heartbeat as a ratio. Target (issue 15): first
heartbeat p50 ≤ 10 s under TCG.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.image.smoke import Smoke, Watch, build_system_base, smoke_platform, watch_boot
from tests.package_cache import EPOCH, package_cache
from tests.platform.qemu import guest

from powernode.image.build import build
from powernode.platform.services.providers import ProvisionRequest
from powernode.platform.services.qemu_provider import LocalQemuProvider, QemuConfig

PHASES = (
    "initramfs /init",
    "identity claimed",
    "root composed",
    "switch_root",
    "agent started",
    "first heartbeat",
)
BUDGET = 900.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def first_boots(smoke: Smoke, boots: int) -> list[dict[str, float]]:
    out = []
    for i in range(boots):
        host = f"bench-{i}"
        smoke.api.ok("POST", "/nodes", json={"hostname": host, "node_template_id": "base"})
        t0 = time.monotonic()
        iid = smoke.api.ok("POST", "/node_instances", json={"node_id": host})["instance"]["id"]
        w = Watch(t0, f"first boot {i + 1}")
        watch_boot(smoke, iid, w, budget=BUDGET)
        if "first heartbeat" not in w.seen:
            raise SystemExit(f"boot {i + 1}: no heartbeat; console:\n{w.console[-3000:]}")
        out.append(w.seen)
        smoke.api.ok("POST", f"/node_instances/{iid}/terminate")
    return out


def reboots(smoke: Smoke, boots: int) -> list[dict[str, float]]:
    smoke.api.ok("POST", "/nodes", json={"hostname": "bench-r", "node_template_id": "base"})
    iid = smoke.api.ok("POST", "/node_instances", json={"node_id": "bench-r"})["instance"]["id"]
    w = Watch(time.monotonic(), "reboot series: first boot")
    watch_boot(smoke, iid, w, budget=BUDGET)
    out = []
    for i in range(boots):
        offset = len(smoke.api.console(iid).encode())
        since = datetime.now(UTC)
        t0 = time.monotonic()
        smoke.api.ok("POST", f"/node_instances/{iid}/reboot")
        w = Watch(t0, f"reboot {i + 1}")
        watch_boot(smoke, iid, w, budget=BUDGET, console_from=offset, heartbeat_since=since)
        if "first heartbeat" not in w.seen:
            raise SystemExit(f"reboot {i + 1}: no heartbeat; console:\n{w.console[-3000:]}")
        out.append(w.seen)
    return out


def reference(root: Path, boots: int) -> list[float]:
    """The minimal guest to /init through the same provider (kernel + tiny initramfs)."""
    provider = LocalQemuProvider(
        QemuConfig(
            image_dir=guest.image_dir(root / "ref", pvh=True),
            state_dir=root / "ref-state",
            platform_url="http://10.0.2.2:9",
            accel="tcg",
            memory_mb=256,
            persist_disk_mb=64,
        )
    )
    out = []
    for _ in range(boots):
        iid = str(uuid.uuid4())
        t0 = time.monotonic()
        provider.provision(ProvisionRequest(iid, "n", "h", "t", "pnb_bench"))
        try:
            while b"powernode-test: boot" not in (provider.console(iid, 1 << 20) or b""):
                if time.monotonic() - t0 > 120:
                    raise SystemExit("reference guest: no /init within 120 s")
                time.sleep(0.02)
            out.append(time.monotonic() - t0)
        finally:
            provider.terminate(iid)
    return out


def table(name: str, runs: list[dict[str, float]], ref50: float) -> None:
    print(f"\n{name} ({len(runs)} boots), host seconds after the API call returned:")
    print(f"{'phase':<18}{'p50':>8}{'p95':>8}{'ratio to reference p50':>26}")
    for p in PHASES:
        values = [r[p] for r in runs if p in r]
        if not values:
            print(f"{p:<18}{'-':>8}")
            continue
        a = statistics.median(values)
        print(f"{p:<18}{a:>8.1f}{pct(values, 0.95):>8.1f}{a / ref50:>26.2f}")


def main() -> None:
    boots = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="bench-node-boot-") as tmp:
        root = Path(tmp)
        cache = package_cache(root / "cache")
        image = build("kernel-initrd", "amd64", root / "kernel-initrd", cache=cache, epoch=EPOCH)
        given = os.environ.get("POWERNODE_SMOKE_SYSTEM_BASE")
        base = Path(given) if given else build_system_base(root / "sb", cache, EPOCH)
        ref = reference(root, boots)
        with smoke_platform(root / "p", image, base) as smoke:
            first = first_boots(smoke, boots)
            again = reboots(smoke, boots)
    ref50 = statistics.median(ref)
    print(f"\nreference: minimal guest to /init, p50 {ref50:.1f} s, p95 {pct(ref, 0.95):.1f} s")
    table("first boot (fs-verity enabled on the whole store)", first, ref50)
    table("reboot (verity kept, the persist store's last good set)", again, ref50)
    hb = statistics.median(r["first heartbeat"] for r in first)
    hb_r = statistics.median(r["first heartbeat"] for r in again)
    print(f"\nfirst heartbeat p50: first boot {hb:.1f} s, reboot {hb_r:.1f} s; target ≤ 10 s")


if __name__ == "__main__":
    main()
