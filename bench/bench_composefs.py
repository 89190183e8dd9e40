"""Benchmark: our composefs writer against erofs-utils' `mkfs.erofs` on a Debian tree.

Run: .venv/bin/python bench/bench_composefs.py [--src DIR] [--repeat 3]
The tree defaults to the newest /usr/lib/python3.N (the first that exists,
newest version first). Each build goes to a fresh temp dir on the same disk
(deleted afterwards); the tree is read once first to warm the page cache; each
tool is timed best of --repeat, all in this one run.

What is compared (same tree, same run):

- ours: ``build_image(SRC, IMG, digest_store=STORE)``, i.e. ``powernode composefs
  mkimage --digest-store STORE SRC IMG``: scan, fs-verity digest of every file,
  the metadata image, and every file's content copied (fsynced) into the
  object store.
- mkfs.erofs, comparable invocation (the main reference):
  ``mkfs.erofs --quiet --preserve-mtime --blobdev=BLOB --chunksize=1073741824 IMG SRC``.
  ``--blobdev`` puts file data in a separate blob, so IMG holds metadata only,
  as a composefs image does (its data is the object store); ``--chunksize`` is
  required by ``--blobdev``, and the largest chunk gives mkfs.erofs its smallest
  image (4 KiB chunks were 45% larger here); ``--preserve-mtime`` keeps every
  file's mtime as composefs does (1.5's default too, spelled out). uid/gid,
  modes and xattrs are kept by default in both tools; neither compresses.
- ours, image only (no digest store): scan, digests and image, no copy; shown
  to split our time between the image and the object copies (which are
  created one file per object and fsynced; mkfs.erofs fsyncs nothing).
- mkfs.erofs plain (``mkfs.erofs --quiet --preserve-mtime IMG SRC``): Debian's
  default use, data inside the image; shown for scale.

It prints sizes, times and the ratios (ours / mkfs.erofs; below 1 is better
for us), and whether the targets (smaller and faster than the comparable
invocation) are met. Prints the load average too: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from powernode.run import run
from powernode.verity.composefs.scan import TreePolicy
from powernode.verity.composefs.writer import build_image

_CHUNK = 1 << 20


def default_src() -> Path | None:
    """The newest /usr/lib/python3.N that exists (then plain /usr/lib/python3*)."""
    found = sorted(Path("/usr/lib").glob("python3*"))
    versioned = [p for p in found if re.fullmatch(r"python3\.\d+", p.name) and p.is_dir()]
    versioned.sort(key=lambda p: int(p.name.split(".")[1]), reverse=True)
    rest = [p for p in found if p.is_dir() and p not in versioned]
    return (versioned + rest or [None])[0]


def warm(src: Path) -> tuple[int, int]:
    """Read every regular file once; returns (entries, bytes)."""
    entries = total = 0
    for dirpath, dirnames, filenames in os.walk(src):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                with p.open("rb", buffering=0) as f:
                    while chunk := f.read(_CHUNK):
                        total += len(chunk)
    return entries, total


def best_of(
    repeat: int, work: Path, fn: Callable[[Path], tuple[int, int]]
) -> tuple[float, int, int]:
    """Best time of ``fn(fresh_dir)``, with the (image, data) sizes it reported."""
    best, sizes = float("inf"), (0, 0)
    for i in range(repeat):
        out = work / f"run{i}"
        out.mkdir()
        start = time.perf_counter()
        sizes = fn(out)
        best = min(best, time.perf_counter() - start)
        shutil.rmtree(out)
    return best, *sizes


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    src = args.src or default_src()
    mkfs = shutil.which("mkfs.erofs")
    if mkfs is None or src is None:
        print("needs mkfs.erofs (erofs-utils) and a /usr/lib/python3* tree (or --src)")
        return 2
    entries, data = warm(src)
    print(f"tree: {src}, {entries} entries, {data / 1e6:.1f} MB of file data")
    print(f"cpus: {os.cpu_count()}; load average before: {os.getloadavg()}")

    def ours(out: Path) -> tuple[int, int]:
        store = out / "objects"
        result = build_image(
            src,
            out / "img.cfs",
            digest_store=store,
            policy=TreePolicy(allow_devices=True, allow_setuid=True),
        )
        return result.size, du(store)

    def ours_image_only(out: Path) -> tuple[int, int]:
        result = build_image(
            src, out / "img.cfs", policy=TreePolicy(allow_devices=True, allow_setuid=True)
        )
        return result.size, 0

    def mkfs_blobdev(out: Path) -> tuple[int, int]:
        img, blob = out / "img.erofs", out / "blob"
        run([mkfs, "--quiet", "--preserve-mtime", f"--blobdev={blob}",
             "--chunksize=1073741824", img, src])  # fmt: skip
        return img.stat().st_size, blob.stat().st_size

    def mkfs_plain(out: Path) -> tuple[int, int]:
        img = out / "img.erofs"
        run([mkfs, "--quiet", "--preserve-mtime", img, src])
        return img.stat().st_size, 0

    with tempfile.TemporaryDirectory(prefix="bench-composefs-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        t_ours, img_ours, data_ours = best_of(args.repeat, work, ours)
        t_only, img_only, _ = best_of(args.repeat, work, ours_image_only)
        t_blob, img_blob, data_blob = best_of(args.repeat, work, mkfs_blobdev)
        t_plain, img_plain, _ = best_of(args.repeat, work, mkfs_plain)
    print(f"load average after: {os.getloadavg()}")
    rows = [
        ("ours: composefs image + object store", t_ours, img_ours, data_ours),
        ("ours: image only (content hashed)", t_only, img_only, 0),
        ("mkfs.erofs --blobdev --chunksize=1G", t_blob, img_blob, data_blob),
        ("mkfs.erofs (data inside the image)", t_plain, img_plain, 0),
    ]
    print(f"{'':40s} {'time':>8s} {'image':>12s} {'data':>12s}")
    for label, seconds, image, blob in rows:
        print(f"{label:40s} {seconds:7.3f}s {image:12,d} {blob:12,d}")
    size_ratio, time_ratio = img_ours / img_blob, t_ours / t_blob
    print(
        f"ratio ours / mkfs.erofs --blobdev: image size {size_ratio:.2f}x, time {time_ratio:.2f}x"
    )
    print(
        f"ratio ours / mkfs.erofs plain: image size {img_ours / img_plain:.4f}x, "
        f"time {t_ours / t_plain:.2f}x"
    )
    print(f"target smaller than mkfs.erofs --blobdev: {'met' if size_ratio < 1 else 'NOT met'}")
    print(f"target faster than mkfs.erofs --blobdev: {'met' if time_ratio < 1 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
