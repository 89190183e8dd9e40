"""Images we write mount: EROFS (file-backed) + overlayfs with the object store as a
data-only lower layer, and every path reads back as in the source tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from powernode.mount.kernel import MS_RDONLY, mount, umount
from powernode.verity.composefs.scan import TreePolicy
from powernode.verity.composefs.writer import build_image

from .vectors import _acl, vector_b

pytestmark = pytest.mark.mount


def _populate(root: Path) -> None:
    vector_b(root)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "blob").write_bytes(os.urandom(70_000))
    (root / "sub" / "ns").write_bytes(b"n" * 10)
    os.utime(root / "sub" / "ns", ns=(1_234_567_890_123_456_789,) * 2)
    os.symlink("/" + "t" * 4000, root / "sub" / "long")
    os.mkfifo(root / "sub" / "fifo")
    os.mknod(root / "sub" / "null", 0o20666, os.makedev(1, 3))
    (root / "owned").write_bytes(b"o" * 200)
    os.chown(root / "owned", 100000, 70000)
    os.setxattr(root / "owned", "user.tag", b"blue")
    os.setxattr(root / "hundred", "user.tag", b"blue")
    os.setxattr(root / "sub", "security.test", b"\x00\x01")
    os.setxattr(root / "sub", "trusted.overlay.mine", b"escaped")  # not compared
    acl = _acl((1, 6, 0xFFFFFFFF), (4, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF))
    os.setxattr(root / "owned", "system.posix_acl_access", acl)
    for i in range(300):
        (root / "sub" / f"e{i:03d}").write_bytes(b"")
    os.utime(root / "sub", ns=(1_500_000_000_000_000_001,) * 2)


def _xattrs(path: Path) -> dict[str, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {
        n: os.getxattr(path, n, follow_symlinks=False)
        for n in names
        if not n.startswith("trusted.overlay.")
    }


def _compare(src: Path, mnt: Path) -> int:
    checked = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        assert sorted(os.listdir(mnt / rel)) == sorted(dirnames + filenames), rel
        for name in [".", *dirnames, *filenames]:
            a, b = src / rel / name, mnt / rel / name
            sa, sb = a.lstat(), b.lstat()
            what = str(rel / name)
            assert (sa.st_mode, sa.st_uid, sa.st_gid) == (sb.st_mode, sb.st_uid, sb.st_gid), what
            assert sa.st_mtime_ns == sb.st_mtime_ns, what
            assert _xattrs(a) == _xattrs(b), what
            if stat.S_ISREG(sa.st_mode):
                assert sa.st_size == sb.st_size and a.read_bytes() == b.read_bytes(), what
            elif stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b), what
            elif stat.S_ISCHR(sa.st_mode):
                assert sa.st_rdev == sb.st_rdev, what
            checked += 1
    return checked


def test_image_mounts_and_matches_source(tmp_path: Path) -> None:
    src, img, store = tmp_path / "src", tmp_path / "img.cfs", tmp_path / "objects"
    _populate(src)
    build_image(src, img, digest_store=store, policy=TreePolicy(allow_devices=True))
    meta, union = tmp_path / "meta", tmp_path / "union"
    meta.mkdir()
    union.mkdir()
    mount(img, meta, "erofs", MS_RDONLY)
    try:
        opts = f"metacopy=on,redirect_dir=on,lowerdir={meta}::{store}"
        mount("overlay", union, "overlay", MS_RDONLY, opts)
        try:
            assert _compare(src, union) > 300
        finally:
            umount(union)
    finally:
        umount(meta)
