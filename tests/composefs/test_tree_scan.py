"""Directory scan: policy, errors with paths, reproducibility (COMPOSEFS.md §5.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from powernode.errors import SourceTreeError
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.tree import HardLink, Tree
from powernode.verity.composefs.writer import image_bytes
from tests.conftest import require_root

POLICY = TreePolicy()
REPO = Path(__file__).resolve().parents[2]


def test_missing_src(tmp_path: Path) -> None:
    with pytest.raises(SourceTreeError, match=r"/nope: source directory does not exist"):
        scan_tree(tmp_path / "nope", policy=POLICY)


def test_src_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(SourceTreeError, match=r"/f: source is not a directory"):
        scan_tree(tmp_path / "f", policy=POLICY)


def test_src_is_a_symlink_loop(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(SourceTreeError, match=r"/loop: source path is a symlink loop"):
        scan_tree(tmp_path / "loop", policy=POLICY)


def test_src_symlink_to_directory_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"x")
    os.symlink("real", tmp_path / "alias")
    assert b"f" in scan_tree(tmp_path / "alias", policy=POLICY).root.children


def test_symlink_loops_inside_the_tree_are_stored_not_followed(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    os.symlink(".", tmp_path / "d" / "self")
    os.symlink("..", tmp_path / "d" / "up")
    tree = scan_tree(tmp_path, policy=POLICY)
    assert tree.get("/a").target == b"b" and tree.get("/b").target == b"a"
    assert tree.get("/d/self").target == b"." and tree.get("/d/up").target == b".."
    assert len(list(tree.walk())) == 6
    image_bytes(tree)  # writes without following anything


def test_devices_need_allow_devices(tmp_path: Path) -> None:
    require_root()
    os.mknod(tmp_path / "null", 0o20644, os.makedev(1, 3))
    with pytest.raises(SourceTreeError, match=r"/null: is a device node; set allow.devices"):
        scan_tree(tmp_path, policy=POLICY)
    tree = scan_tree(tmp_path, policy=TreePolicy(allow_devices=True))
    assert tree.get("/null").rdev == os.makedev(1, 3)


def test_whiteouts_and_fifos_need_no_permission(tmp_path: Path) -> None:
    require_root()
    os.mknod(tmp_path / "gone", 0o20000, os.makedev(0, 0))
    os.mkfifo(tmp_path / "fifo")
    tree = scan_tree(tmp_path, policy=POLICY)
    assert set(tree.root.children) == {b"gone", b"fifo"}
    assert image_bytes(tree)[12] == 1  # a whiteout raises the format version


def test_setuid_needs_allow_setuid(tmp_path: Path) -> None:
    f = tmp_path / "su"
    f.write_bytes(b"#!/bin/sh\n")
    os.chmod(f, 0o4755)  # noqa: S103
    with pytest.raises(SourceTreeError, match=r"/su: is setuid/setgid \(mode 4755\); set allow."):
        scan_tree(tmp_path, policy=POLICY)
    assert scan_tree(tmp_path, policy=TreePolicy(allow_setuid=True)).get("/su").mode == 0o104755


def test_hard_links_are_not_detected_like_mkcomposefs(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"h" * 1000)
    os.link(tmp_path / "a", tmp_path / "b")
    tree = scan_tree(tmp_path, policy=POLICY)
    a, b = tree.get("/a"), tree.get("/b")
    assert a is not b and a.nlink == b.nlink == 1
    assert not any(isinstance(c, HardLink) for c in tree.root.children.values())
    assert a.payload == b.payload


def test_file_changing_while_read_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "grows"
    f.write_bytes(b"g" * 5000)

    def grow(path: Path, done: int) -> None:
        with path.open("ab") as out:
            out.write(b"more")

    with pytest.raises(SourceTreeError, match=r"/grows: file changed while it was read"):
        scan_tree(tmp_path, policy=POLICY, read_hook=grow)


def test_small_file_rewritten_while_read_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "small"
    f.write_bytes(b"s" * 10)

    def touch(path: Path, done: int) -> None:
        os.utime(path, ns=(1, 1))

    with pytest.raises(SourceTreeError, match=r"/small: file changed while it was read"):
        scan_tree(tmp_path, policy=POLICY, read_hook=touch)


def test_unreadable_file_is_an_error_naming_it() -> None:
    require_root()
    top = Path(tempfile.mkdtemp(prefix="cfs-unreadable-"))
    try:
        os.chmod(top, 0o755)  # noqa: S103 - nobody must reach the file
        secret = top / "secret"
        secret.write_bytes(b"x" * 100)
        os.chmod(secret, 0)
        code = (
            "import os, sys, pathlib\n"
            "import tests.composefs.conftest\n"
            "from powernode.errors import SourceTreeError\n"
            "from powernode.verity.composefs.scan import TreePolicy, scan_tree\n"
            "# drop root only after importing: the interpreter lives under /root\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            f"    scan_tree(pathlib.Path({str(top)!r}), policy=TreePolicy())\n"
            "except SourceTreeError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 3, proc.stderr
        assert f"{secret}: cannot read file: Permission denied" in proc.stdout
    finally:
        os.chmod(top / "secret", 0o600)
        for p in top.iterdir():
            p.unlink()
        top.rmdir()


def test_xattrs_are_read_verbatim_and_policy_filters(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    os.setxattr(f, "user.a", b"\x00\xff")
    if os.geteuid() == 0:
        os.setxattr(f, "trusted.t", b"1")
    assert scan_tree(tmp_path, policy=POLICY).get("/f").xattrs[b"user.a"] == b"\x00\xff"
    user_only = scan_tree(tmp_path, policy=TreePolicy(xattrs="user")).get("/f").xattrs
    assert set(user_only) == {b"user.a"}
    assert scan_tree(tmp_path, policy=TreePolicy(xattrs="none")).get("/f").xattrs == {}


def test_mtime_nanoseconds_epoch_clamp_and_use_epoch(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"")
    new.write_bytes(b"")
    os.utime(old, ns=(1_000_000_000_123, 1_000_000_000_123))
    os.utime(new, ns=(2_000_000_000_000_000_005,) * 2)
    tree = scan_tree(tmp_path, policy=POLICY)
    assert (tree.get("/old").mtime, tree.get("/old").mtime_nsec) == (1000, 123)
    clamped = scan_tree(tmp_path, policy=TreePolicy(source_date_epoch=1_500_000_000))
    assert (clamped.get("/old").mtime, clamped.get("/old").mtime_nsec) == (1000, 123)
    assert (clamped.get("/new").mtime, clamped.get("/new").mtime_nsec) == (1_500_000_000, 0)
    zero = scan_tree(tmp_path, policy=TreePolicy(use_epoch=True))
    assert all((n.mtime, n.mtime_nsec) == (0, 0) for _, n in zero.walk())


def _populate(root: Path, order: list[str]) -> None:
    root.mkdir()
    for name in order:
        p = root / name
        if name.endswith("/"):
            p.mkdir()
        elif name.startswith("ln"):
            os.symlink("target-" + name, p)
        else:
            p.write_bytes(name.encode() * 50)


def _image(root: Path, policy: TreePolicy) -> bytes:
    return image_bytes(scan_tree(root, policy=policy))


def test_same_tree_any_creation_order_and_host_mtime_gives_same_bytes(tmp_path: Path) -> None:
    names = ["d/", "a", "B", "ln1", "z" * 80, "é", "-x", ".hidden"]
    _populate(tmp_path / "one", names)
    _populate(tmp_path / "two", list(reversed(names)))
    for p in (tmp_path / "two").rglob("*"):
        os.utime(p, (2_000_000_000, 2_000_000_000), follow_symlinks=False)
    policy = TreePolicy(source_date_epoch=1_000_000_000)
    assert _image(tmp_path / "one", policy) == _image(tmp_path / "two", policy)
    assert _image(tmp_path / "one", POLICY) != _image(tmp_path / "two", POLICY)
    epoch = TreePolicy(use_epoch=True)
    assert _image(tmp_path / "one", epoch) == _image(tmp_path / "two", epoch)


def test_children_sorted_bytewise(tmp_path: Path) -> None:
    for name in ["é", "a", "B", "..x", " b", "-a", ".hidden"]:
        (tmp_path / name).write_bytes(b"")
    tree: Tree = scan_tree(tmp_path, policy=POLICY)
    assert [p for p, _ in tree.walk()][1:] == [
        b"/ b",
        b"/-a",
        b"/..x",
        b"/.hidden",
        b"/B",
        b"/a",
        "/é".encode(),
    ]
