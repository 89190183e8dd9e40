"""Benchmark: match a 400-package module against 50,000 OSV records, beside the feed's load.

Run: .venv/bin/python bench/bench_osv_match.py
The feed is generated (seeded) in the shape of Debian's OSV records
(``affected[].package.ecosystem = "Debian:12"``, source package names, one
ECOSYSTEM range ``introduced``/``fixed``, versions with epochs, ``~`` and
``+debNuM``), about 2.5 records per package over 20,000 source packages.
Prints the load time (JSON bytes -> parsed records -> index by package
name), the match time (cold: first match, dpkg versions not cached; warm:
best of 5), their ratio, and whether the cold match meets the target of
<= 1 s. The reference is the load, measured in the same run.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powernode.supply import osv

RECORDS = 50_000
SOURCES = 20_000
MODULE_PACKAGES = 400
TARGET_S = 1.0
SEED = 18


def version(rnd: random.Random) -> str:
    epoch = f"{rnd.randrange(1, 3)}:" if rnd.random() < 0.1 else ""
    up = ".".join(str(rnd.randrange(0, 20)) for _ in range(rnd.randrange(2, 4)))
    if rnd.random() < 0.1:
        up += f"~rc{rnd.randrange(1, 4)}"
    if rnd.random() < 0.2:
        up += "+dfsg"
    rev = f"-{rnd.randrange(1, 6)}"
    if rnd.random() < 0.4:
        rev += f"+deb12u{rnd.randrange(1, 9)}"
    return epoch + up + rev


def feed(rnd: random.Random) -> tuple[bytes, list[str]]:
    names = [f"src{i:05d}" for i in range(SOURCES)]
    records = []
    for i in range(RECORDS):
        name = rnd.choice(names)
        events: list[dict[str, str]] = [{"introduced": "0"}]
        if rnd.random() < 0.85:
            events.append({"fixed": version(rnd)})
        rec: dict[str, object] = {
            "id": f"DEBIAN-CVE-2026-{i:05d}",
            "modified": "2026-12-01T00:00:00Z",
            "published": "2026-11-01T00:00:00Z",
            "aliases": [f"CVE-2026-{i:05d}"],
            "details": "generated",
            "affected": [
                {
                    "package": {"ecosystem": "Debian:12", "name": name},
                    "ranges": [{"type": "ECOSYSTEM", "events": events}],
                }
            ],
        }
        if rnd.random() < 0.5:
            rec["severity"] = [
                {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
            ]
        records.append(rec)
    return json.dumps(records).encode(), names


def main() -> int:
    rnd = random.Random(SEED)  # noqa: S311 - seeded test data, not secrets
    data, names = feed(rnd)
    t0 = time.perf_counter()
    index = osv.FeedIndex(osv.parse_records(osv.read_documents(data)))
    load = time.perf_counter() - t0
    pkgs = [
        osv.Pkg(f"lib{n}", version(rnd), "debian-12", n) for n in rnd.sample(names, MODULE_PACKAGES)
    ]
    osv.dpkg_version.cache_clear()
    t0 = time.perf_counter()
    matches = index.match(pkgs)
    cold = time.perf_counter() - t0
    warm = min(_timed(index, pkgs) for _ in range(5))
    print(f"feed: {RECORDS} records, {len(data) / 1e6:.1f} MB JSON")
    print(f"load (parse + index): {load:.3f} s")
    print(f"match {MODULE_PACKAGES} packages, cold: {cold:.4f} s ({len(matches)} findings)")
    print(f"match {MODULE_PACKAGES} packages, warm (best of 5): {warm:.4f} s")
    print(f"ratio match/load: cold {cold / load:.4f}, warm {warm / load:.4f}")
    ok = cold <= TARGET_S
    print(f"target match <= {TARGET_S} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def _timed(index: osv.FeedIndex, pkgs: list[osv.Pkg]) -> float:
    t0 = time.perf_counter()
    index.match(pkgs)
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
