"""Benchmark: our composefs writer against erofs-utils' `mkfs.erofs` on a Debian tree.

Run: .venv/bin/python bench/bench_composefs.py [--src DIR] [--repeat 3] [--workdir DIR]
                                              [--mkcomposefs PATH]
The tree defaults to the newest /usr/lib/python3.N. The tree is read once
first to warm the page cache; each tool is timed best of --repeat rounds
(one round runs every job once, in turns), all in this one run, every build
into a fresh directory under --workdir (default /var/tmp, on the root disk).
Run it under ``flock /tmp/powernode-bench.lock``.

The two fair comparisons (same tree, same filesystem, same run):

1. The complete job, data included: ours = ``build_image(SRC, IMG,
   digest_store=STORE)`` (``powernode composefs mkimage --digest-store STORE
   SRC IMG``: scan, fs-verity digest of every file, every file's content
   written once into the object store, the metadata image) against
   ``mkfs.erofs --quiet --preserve-mtime IMG SRC`` (data inside the image).
   Both end with every byte of the tree written out. Size = image + objects.
2. Metadata only: ours without a digest store (scan, digests, image) against
   ``mkfs.erofs --blobdev=BLOB --chunksize=1073741824`` (metadata image, data
   in a separate blob; the largest chunk size gives its smallest image).
   Size = the metadata image alone. Ours also with ``processes=N`` (the
   usable CPUs): the files digested on N processes; the images must be equal.

The ratio to watch beside those: ours, image only, against plain
``mkfs.erofs`` with the data inside (the image job without the copies; our
image is ~130x smaller, so the question is time).

Differences the figures carry, by design of each tool: ours makes its output
durable (the objects with one syncfs, the image with fsync) and mkfs.erofs
does not sync at all (rows "then fsync" add an fsync of its outputs, the
durable equivalent); ours creates one file per distinct object, mkfs.erofs
one file. The cost of creating files varies a lot by filesystem state (on a
busy ext4, the inode allocator skips inodes deleted in the last ~30 s, one by
one), so the bench measures it in the work dir first and prints it, and keeps
every run's output until the end (deleting between runs would slow the next).
``--workdir /dev/shm`` (tmpfs) removes the disk from both sides.

A composefs image is larger than mkfs.erofs's metadata image: every external
file carries two overlay xattrs (its fs-verity digest and its object path,
~130 bytes) where EROFS keeps an 8-byte chunk index, and the root holds 256
whiteouts; the format is fixed by mkcomposefs compatibility (byte-identical
images), so this size is not ours to shrink.

With ``--mkcomposefs PATH`` (composefs's own C tool, not packaged in Debian
12) its time on the complete job is shown for reference.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from powernode.run import run
from powernode.verity.composefs.scan import TreePolicy
from powernode.verity.composefs.writer import build_image

_CHUNK = 1 << 20
_POLICY = TreePolicy(allow_devices=True, allow_setuid=True)


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


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_cost(work: Path, count: int = 1000) -> float:
    """Seconds to create (and close) ``count`` empty files in a new dir under ``work``."""
    d = work / "calibrate"
    d.mkdir()
    start = time.perf_counter()
    for i in range(count):
        os.close(os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return time.perf_counter() - start


class Sizes:
    """Bytes of an output (apparent) and bytes allocated on disk."""

    def __init__(self, paths: list[Path]) -> None:
        self.apparent = self.allocated = 0
        for top in paths:
            for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
                st = p.lstat()
                if p.is_file():
                    self.apparent += st.st_size
                    self.allocated += st.st_blocks * 512


Job = Callable[[Path], tuple[list[Path], list[Path]]]


def in_turns(
    repeat: int, work: Path, jobs: dict[str, Job]
) -> dict[str, tuple[float, Sizes, Sizes]]:
    """Best time of each ``job(fresh_dir)`` -> (metadata paths, data paths), with sizes.

    The jobs run in turns (one round = each job once), so a burst of other
    load on the shared machine slows every job alike rather than one of them.
    """
    best: dict[str, float] = {}
    sizes: dict[str, tuple[Sizes, Sizes]] = {}
    for i in range(repeat):
        for n, (label, fn) in enumerate(jobs.items()):
            out = work / f"job{n}-{i}"
            out.mkdir()
            start = time.perf_counter()
            meta_paths, data_paths = fn(out)
            best[label] = min(best.get(label, float("inf")), time.perf_counter() - start)
            sizes[label] = (Sizes(meta_paths), Sizes(data_paths))
    return {label: (best[label], *sizes[label]) for label in jobs}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--src", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--mkcomposefs", type=Path, default=None)
    args = parser.parse_args()
    src = args.src or default_src()
    mkfs = shutil.which("mkfs.erofs")
    if mkfs is None or src is None:
        print("needs mkfs.erofs (erofs-utils) and a /usr/lib/python3* tree (or --src)")
        return 2
    entries, data = warm(src)
    fstype = subprocess.run(
        ["stat", "-f", "-c", "%T", str(args.workdir)], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"tree: {src}, {entries} entries, {data / 1e6:.1f} MB of file data")
    cpus = len(os.sched_getaffinity(0))
    print(f"usable cpus: {cpus}; load average before: {os.getloadavg()}")

    digests: set[str] = set()  # every image of ours: one digest, whatever the path

    def ours(out: Path) -> tuple[list[Path], list[Path]]:
        result = build_image(src, out / "img.cfs", digest_store=out / "objects", policy=_POLICY)
        digests.add(result.digest)
        return [out / "img.cfs"], [out / "objects"]

    def ours_image_only(out: Path) -> tuple[list[Path], list[Path]]:
        digests.add(build_image(src, out / "img.cfs", policy=_POLICY).digest)
        return [out / "img.cfs"], []

    def ours_image_procs(out: Path) -> tuple[list[Path], list[Path]]:
        digests.add(build_image(src, out / "img.cfs", policy=_POLICY, processes=cpus).digest)
        return [out / "img.cfs"], []

    def mkfs_plain(out: Path) -> tuple[list[Path], list[Path]]:
        run([mkfs, "--quiet", "--preserve-mtime", out / "img.erofs", src])
        return [out / "img.erofs"], []

    def mkfs_plain_synced(out: Path) -> tuple[list[Path], list[Path]]:
        paths = mkfs_plain(out)
        fsync(out / "img.erofs")
        return paths

    def mkfs_blobdev(out: Path) -> tuple[list[Path], list[Path]]:
        img, blob = out / "img.erofs", out / "blob"
        run([mkfs, "--quiet", "--preserve-mtime", f"--blobdev={blob}",
             "--chunksize=1073741824", img, src])  # fmt: skip
        return [img], [blob]

    def mkfs_blobdev_synced(out: Path) -> tuple[list[Path], list[Path]]:
        paths = mkfs_blobdev(out)
        fsync(out / "img.erofs")
        fsync(out / "blob")
        return paths

    def mkcomposefs(out: Path) -> tuple[list[Path], list[Path]]:
        run([args.mkcomposefs, f"--digest-store={out / 'objects'}", src, out / "img.cfs"])
        return [out / "img.cfs"], [out / "objects"]

    with tempfile.TemporaryDirectory(prefix="bench-composefs-", dir=args.workdir) as tmp:
        work = Path(tmp)
        calib = create_cost(work)
        print(
            f"work dir: {args.workdir} ({fstype}); creating 1,000 empty files there took "
            f"{calib * 1000:.0f} ms"
        )
        jobs: dict[str, Job] = {
            "ours: image + object store": ours,
            "mkfs.erofs (data inside the image)": mkfs_plain,
            "mkfs.erofs, then fsync": mkfs_plain_synced,
            "ours: image only (content hashed)": ours_image_only,
            f"ours: image only, processes={cpus}": ours_image_procs,
            "mkfs.erofs --blobdev --chunksize=1G": mkfs_blobdev,
            "mkfs.erofs --blobdev, then fsync": mkfs_blobdev_synced,
        }
        if args.mkcomposefs:
            jobs["mkcomposefs --digest-store (C)"] = mkcomposefs
        rows = in_turns(args.repeat, work, jobs)
    print(f"load average after: {os.getloadavg()}")
    print(f"{'':38s} {'time':>8s} {'metadata':>11s} {'data':>12s} {'total':>12s} {'on disk':>12s}")
    for label, (seconds, meta, blob) in rows.items():
        total, disk = meta.apparent + blob.apparent, meta.allocated + blob.allocated
        print(
            f"{label:38s} {seconds:7.3f}s {meta.apparent:11,d} {blob.apparent:12,d} "
            f"{total:12,d} {disk:12,d}"
        )
    t_ours, m_ours, d_ours = rows["ours: image + object store"]
    t_plain, m_plain, _ = rows["mkfs.erofs (data inside the image)"]
    t_only, m_only, _ = rows["ours: image only (content hashed)"]
    t_procs, _, _ = rows[f"ours: image only, processes={cpus}"]
    if len(digests) != 1:
        print(f"OUR IMAGES DIFFER: {sorted(digests)}")
        return 1
    t_blob, m_blob, _ = rows["mkfs.erofs --blobdev --chunksize=1G"]
    t_plain_synced = rows["mkfs.erofs, then fsync"][0]
    t_blob_synced = rows["mkfs.erofs --blobdev, then fsync"][0]
    full_time = t_ours / t_plain
    full_size = (m_ours.apparent + d_ours.apparent) / m_plain.apparent
    full_disk = (m_ours.allocated + d_ours.allocated) / m_plain.allocated
    meta_time, meta_size = t_only / t_blob, m_only.apparent / m_blob.apparent
    print("ratios, ours / mkfs.erofs (below 1: ours is smaller or faster):")
    print(
        f"  1. complete job vs plain: time {full_time:.2f}x, size {full_size:.3f}x "
        f"(on disk {full_disk:.3f}x)"
    )
    print(f"  2. metadata only vs --blobdev: time {meta_time:.2f}x, image size {meta_size:.2f}x")
    print(
        f"  both durable (mkfs.erofs then fsync): 1. {t_ours / t_plain_synced:.2f}x, "
        f"2. {t_only / t_blob_synced:.2f}x"
    )
    print(
        f"  image only vs plain mkfs.erofs (data inside; our image is "
        f"{m_plain.apparent / m_only.apparent:.0f}x smaller): 1 process {t_only / t_plain:.2f}x, "
        f"{cpus} processes {t_procs / t_plain:.2f}x"
    )
    for name, ratio in [
        ("1. complete job faster", full_time),
        ("1. complete job smaller", full_size),
        ("2. metadata only faster", meta_time),
        ("2. metadata image smaller", meta_size),
        (f"image only ({cpus} processes) faster than plain mkfs.erofs", t_procs / t_plain),
    ]:
        print(f"target {name}: {'met' if ratio < 1 else 'NOT met'} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
