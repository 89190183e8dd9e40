"""Against the real mkcomposefs and composefs-info (issue 13 item 12).

* ``mkimage`` on forked digest workers (``processes > 1``) took the file's
  mtime as a signed 64-bit nanosecond count and crashed ("argument out of
  range") past 2262-04-11; mkcomposefs takes any time_t. Now every mtime
  mkcomposefs takes gives the same bytes, on any number of processes.
* ``composefs info dump`` hid the opaque markers of directories holding
  whiteouts and sorted xattrs by name; composefs-info prints them, inline
  xattrs before shared ones. Now the lines are the same.

Needs root (whiteouts are device nodes; trusted.* xattrs) and the tools
(``composefs`` 1.0.8: mkcomposefs, composefs-info).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.cli.composefs import app
from powernode.verity.composefs.scan import TreePolicy
from powernode.verity.composefs.scan_procs import DigestPool
from powernode.verity.composefs.tree import Node
from powernode.verity.composefs.writer import build_image
from powernode.verity.fsverity import format_digest, fsverity_digest
from tests.conftest import require_root

pytestmark = pytest.mark.tool

FAR_MTIME_IMAGE_DIGEST = "sha256:683d95564072cc1067533c7cbb7c5d771be1ed9998cdc2e7bf60b9de2a655da1"
POLICY = TreePolicy(allow_devices=True, allow_setuid=True)
NS = 1_000_000_000
# (seconds, nanoseconds) of files larger than 64 bytes (external: digested on workers)
MTIMES = {
    "year-2262-after": (9_223_372_037, 0),  # one second past the signed 64-bit ns limit
    "year-2286": (10_000_000_000, 123_456_789),
    "year-2446": (15_000_000_000, 999_999_999),
    "pre-1970": (-1, 500_000_000),
    "year-1906": (-2_000_000_000, 1),
    "epoch": (0, 0),
    "now-ish": (1_700_000_000, 987_654_321),
}


def run(*argv: str, env: dict[str, str] | None = None) -> bytes:
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, (argv, proc.stderr.decode())
    return proc.stdout


def composefs_tool(name: str) -> str:
    """mkcomposefs / composefs-info, or a skip saying why: Debian 12 does not package
    composefs (trixie does), so unlike the other tools `make test` cannot install it;
    where it is missing the recorded digests below still hold our bytes to it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (not packaged in Debian 12)")
    return path


def mkcomposefs(src: Path, out: Path) -> bytes:
    run(composefs_tool("mkcomposefs"), str(src), str(out))
    return out.read_bytes()


def set_times(root: Path) -> None:
    """Directories last (adding entries changes their mtime)."""
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if not path.is_symlink():
            os.utime(path, ns=(1_600_000_000 * NS, 1_600_000_000 * NS), follow_symlinks=False)
    os.utime(root, ns=(1_600_000_000 * NS, 1_600_000_000 * NS))


def far_mtime_tree(src: Path) -> None:
    src.mkdir()
    for i, name in enumerate(MTIMES):
        (src / "d" / name).mkdir(parents=True)
        for k in range(40):  # several batches, so workers get some
            (src / "d" / name / f"f{k:02d}").write_bytes(bytes([i, k]) * (40 + 97 * k))
    for path in [src, *src.rglob("*")]:  # modes independent of the umask: recorded digest
        path.chmod(0o755 if path.is_dir() else 0o644)
    set_times(src)
    for name, (sec, nsec) in MTIMES.items():
        for f in (src / "d" / name).iterdir():
            os.utime(f, ns=(0, sec * NS + nsec))
            assert f.stat().st_mtime_ns == sec * NS + nsec, f"{f}: this fs cannot store it"


def mkimage(*args: str) -> None:
    """``powernode composefs mkimage`` in a process of its own: one thread, so
    ``--threads N`` forks its digest workers (a test process may hold threads)."""
    code = "from powernode.cli.main import app; app()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("SOURCE_DATE_EPOCH", None)
    run(sys.executable, "-c", code, "composefs", "mkimage", *args, env=env)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_mkimage_takes_every_mtime_mkcomposefs_takes(tmp_path: Path, threads: int) -> None:
    """Regression: ``mkimage --threads 2`` crashed on the files of 2286 and 2446."""
    require_root()
    src = tmp_path / "src"
    far_mtime_tree(src)
    mkimage("--threads", str(threads), str(src), str(tmp_path / "ours.cfs"))
    ours = (tmp_path / "ours.cfs").read_bytes()
    # mkcomposefs 1.0.8's image of this tree (owner root), recorded from the real tool.
    assert format_digest(fsverity_digest(ours)) == FAR_MTIME_IMAGE_DIGEST
    if shutil.which("mkcomposefs"):
        assert ours == mkcomposefs(src, tmp_path / "theirs.cfs")


def test_digest_workers_answer_for_every_mtime(tmp_path: Path) -> None:
    """The worker protocol itself: forked workers digest files of any mtime (a key
    that did not survive the trip would leave them to this process's reader)."""
    files = []
    for i, (sec, nsec) in enumerate(MTIMES.values()):
        for k in range(40):
            path = tmp_path / f"{i}-{k}"
            path.write_bytes(bytes([i, k]) * (40 + 97 * k))
            os.utime(path, ns=(0, sec * NS + nsec))
            files.append(path)
    redone: list[bytes] = []
    got: dict[bytes, bytes] = {}
    with DigestPool(3) as pool:
        for path in files:
            pool.add(os.fsencode(path), path.stat(), Node(stat.S_IFREG | 0o644))
        pool.finish(lambda p, _st, _n: redone.append(p), lambda p, _n, d: got.setdefault(p, d))
    assert redone == []
    assert got == {os.fsencode(p): fsverity_digest(p.read_bytes()) for p in files}


def xattr_tree(src: Path) -> None:
    """Whiteouts, user-set overlay xattrs, shared and inline xattrs, odd names."""
    for d in ("sub/inner", "op", "wo", "many"):
        (src / d).mkdir(parents=True)
    (src / "sub/f").write_bytes(b"hi\n")
    (src / "big").write_bytes(b"q" * 300)
    os.link(src / "big", src / "sub/hl")
    os.symlink("big", src / "link")
    os.symlink("-", src / "dash")
    for whiteout in ("sub/gone", "wo/gone2"):
        os.mknod(src / whiteout, 0o644 | 0o020000, os.makedev(0, 0))
    os.mknod(src / "null", 0o644 | 0o020000, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    (src / "we ird=name").write_bytes(b"a b\n=c")
    for f in ("big", "sub/f", "op"):  # the same xattrs on three inodes: shared
        os.setxattr(src / f, "user.shared1", b"s1")
        os.setxattr(src / f, "user.shared2", b"s 2")
    xattrs = {
        "big": {"user.zeta": b"1", "user.alpha": b"x=y", "trusted.foo": b"3",
                "security.x": b"\x00\xff"},
        "op": {"trusted.overlay.opaque": b"y"},
        "wo": {"trusted.overlay.opaque": b"y"},  # a whiteout dir: mkcomposefs sets "x"
        "sub/f": {"trusted.overlay.custom": b"z"},
        "sub/inner": {"user.overlay.opaque": b"y", "user.overlay.foo": b"bar",
                      "trusted.overlay.redirect": b"/xx", "trusted.overlay.whiteout": b""},
        "many": {f"user.k{i:02d}": bytes([65 + i % 26]) * (i + 1) for i in range(40)},
    }  # fmt: skip
    for f, attrs in xattrs.items():
        for name, value in attrs.items():
            os.setxattr(src / f, name, value)
    for i in range(0, 40, 3):  # some of "many" shared with another inode
        os.setxattr(src / "sub/inner", f"user.k{i:02d}", bytes([65 + i % 26]) * (i + 1))
    set_times(src)
    os.utime(src / "fifo", ns=(0, -100 * NS - NS // 2))
    os.utime(src / "link", ns=(0, 1_700_000_000 * NS + 123_456_789), follow_symlinks=False)


@pytest.mark.parametrize("build", ["mkcomposefs", "mkimage"])
def test_info_dump_prints_what_composefs_info_prints(tmp_path: Path, build: str) -> None:
    require_root()
    src = tmp_path / "src"
    src.mkdir()
    xattr_tree(src)
    image = tmp_path / "img.cfs"
    if build == "mkcomposefs":
        mkcomposefs(src, image)
    else:
        build_image(src, image, policy=POLICY)
    want = run(composefs_tool("composefs-info"), "dump", str(image)).decode()
    assert "trusted.overlay.opaque=x user.overlay.opaque=x" in want  # the case of the report
    got = CliRunner().invoke(app, ["info", "dump", str(image)])
    assert got.exit_code == 0, got.output
    assert got.stdout.splitlines() == want.splitlines()
