"""Round trip through real mounts: a corpus of source trees is scanned, written as a
composefs image plus objects, mounted (file-backed EROFS, then overlayfs with
``lowerdir=<image>::<objects>``, metacopy and redirect_dir on) and read back; every
path must equal the source byte for byte and stat for stat.

Sources and objects live in a tmpfs. Images live on the test's disk directory:
file-backed EROFS needs a backing filesystem that can read folios, which tmpfs
cannot (the mount fails with ENOTBLK). Every mount is made through one
MountStack per test and unwound even when the test fails; the fixture then
checks that nothing is left mounted.

Known, documented differences (docs/composefs.md) are asserted as such, not
skipped: hard links from a directory scan are separate inodes (mkcomposefs
directory mode), and a whiteout (char 0:0) reads back as composefs' escaped
"xwhiteout" (a mode-0 regular file with ``trusted.overlay.whiteout``) that acts
as a whiteout only when this mount is the lower layer of another overlay.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from powernode.errors import DigestMismatchError
from powernode.mount.kernel import mountpoints
from powernode.mount.overlay import MountStack, mount_stack
from powernode.verity.composefs.reader import open_image
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.writer import build_image, write_tree
from powernode.verity.objectstore import ObjectStore

pytestmark = pytest.mark.mount

ALLOW_ALL = TreePolicy(allow_devices=True, allow_setuid=True)
_CHUNK = 1 << 20


@dataclass
class Rig:
    """Where one test builds and mounts: ``ram`` (tmpfs) for trees and objects, ``disk``
    for images, ``mnt`` for mount points."""

    stack: MountStack
    ram: Path
    disk: Path
    mnt: Path

    @property
    def objects(self) -> Path:
        return self.ram / "objects"

    def build(self, src: Path, name: str, policy: TreePolicy = ALLOW_ALL) -> Path:
        image = self.disk / f"{name}.cfs"
        build_image(src, image, digest_store=self.objects, policy=policy)
        return image

    def mount(self, image: Path) -> Path:
        meta = self.stack.image(image, self.mnt / f"{image.stem}.meta")
        return self.stack.overlay(self.mnt / f"{image.stem}.union", [meta], [self.objects])

    def roundtrip(self, src: Path, name: str, policy: TreePolicy = ALLOW_ALL) -> Path:
        return self.mount(self.build(src, name, policy))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    disk, mnt = tmp_path / "disk", tmp_path / "mnt"
    disk.mkdir()
    mnt.mkdir()
    with mount_stack() as stack:
        ram = stack.tmpfs(tmp_path / "ram", size="1g")
        yield Rig(stack, ram, disk, mnt)
    left = [m for m in mountpoints() if m.startswith(str(tmp_path))]
    assert left == [], f"mounts left behind: {left}"


# --- comparison ------------------------------------------------------------------------


def _xattrs(path: bytes) -> dict[str, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}


def _same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# A directory holding whiteouts is marked for xwhiteout lookups (COMPOSEFS.md §6.1 step 3);
# through one overlay the escaped markers read back unescaped.
_WHITEOUT_DIR_MARKERS = {
    "trusted.overlay.opaque": b"x",
    "trusted.overlay.whiteouts": b"",
    "user.overlay.opaque": b"x",
    "user.overlay.whiteouts": b"",
}


def _holds_whiteout(d: bytes) -> bool:
    return any(_is_whiteout(os.lstat(d + b"/" + n)) for n in os.listdir(d))


def _check_whiteout(st: os.stat_result, b: bytes, what: str, bad: list[str]) -> None:
    """A source whiteout reads back as an escaped xwhiteout (see the module docstring)."""
    if not (stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0 and st.st_size == 0):
        bad.append(f"{what}: whiteout reads back as mode {st.st_mode:#o}, size {st.st_size}")
    if "trusted.overlay.whiteout" not in _xattrs(b):
        bad.append(f"{what}: whiteout lost its trusted.overlay.whiteout marker")


def _compare_entry(a: bytes, b: bytes, what: str, bad: list[str]) -> None:
    sa, sb = os.lstat(a), os.lstat(b)
    if _is_whiteout(sa):
        _check_whiteout(sb, b, what, bad)
        return
    fields = ("st_mode", "st_uid", "st_gid", "st_mtime_ns")
    if stat.S_ISDIR(sa.st_mode):  # 2 + subdirectories, recomputed by the writer (§6.2)
        fields += ("st_nlink",)
    # directory scans store each path as its own inode (no hard links): nlink 1
    if not stat.S_ISDIR(sa.st_mode) and sb.st_nlink != 1:
        bad.append(f"{what}: nlink {sb.st_nlink}, want 1")
    if stat.S_ISREG(sa.st_mode) or stat.S_ISLNK(sa.st_mode):
        fields += ("st_size",)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        fields += ("st_rdev",)
    for f in fields:
        if getattr(sa, f) != getattr(sb, f):
            bad.append(f"{what}: {f} {getattr(sb, f)!r}, want {getattr(sa, f)!r}")
    want = _xattrs(a)
    if stat.S_ISDIR(sa.st_mode) and _holds_whiteout(a):
        want |= _WHITEOUT_DIR_MARKERS
    got = _xattrs(b)
    if got != want:
        bad.append(f"{what}: xattrs {got!r}, want {want!r}")
    if stat.S_ISLNK(sa.st_mode) and os.readlink(a) != os.readlink(b):
        bad.append(f"{what}: symlink -> {os.readlink(b)!r}, want {os.readlink(a)!r}")
    if stat.S_ISREG(sa.st_mode) and not _same_content(a, b):
        bad.append(f"{what}: content differs")


def compare(src: Path, mnt: Path) -> int:
    """Every path of ``src`` against ``mnt``; returns the number of paths compared."""
    bad: list[str] = []
    count = 0
    stack = [b""]
    top_a, top_b = os.fsencode(src), os.fsencode(mnt)
    while stack:
        rel = stack.pop()
        a, b = top_a + rel, top_b + rel
        what = os.fsdecode(rel or b"/")
        _compare_entry(a, b, what, bad)
        count += 1
        if not stat.S_ISDIR(os.lstat(a).st_mode):
            continue
        names_a, names_b = sorted(os.listdir(a)), sorted(os.listdir(b))
        if names_a != names_b:
            bad.append(f"{what}: names {set(names_b) ^ set(names_a)!r} differ")
        common = set(names_a) & set(names_b)
        stack.extend(rel + b"/" + n for n in names_a if n in common)
        assert len(bad) < 50, "\n".join(bad)
    assert bad == [], "\n".join(bad)
    return count


# --- the corpus ------------------------------------------------------------------------


def _file(path: Path, data: bytes, mode: int | None = None) -> Path:
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def tree_types(root: Path) -> int:
    """Every file type, sizes around the inline limit and block edges, odd modes."""
    for size in (0, 1, 63, 64, 65, 4095, 4096, 4097, 65536, (1 << 20) + 3):
        _file(root / f"size-{size}", os.urandom(size))
    _file(root / "same-content-1", b"dup" * 3000)
    _file(root / "same-content-2", b"dup" * 3000)  # one object, two inodes
    (root / "empty-dir").mkdir()
    (root / "dir").mkdir()
    _file(root / "dir" / "inside", b"i" * 100)
    os.symlink("dir/inside", root / "link-rel")
    os.symlink("/etc/passwd", root / "link-abs")
    os.symlink("nowhere", root / "link-dangling")
    os.symlink("dir", root / "link-to-dir")
    os.symlink("/" + "t" * 4000, root / "link-long")
    os.symlink("link-loop", root / "link-loop")
    os.mkfifo(root / "fifo", 0o640)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fsdecode(root / "socket"))
    os.mknod(root / "char", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "block", stat.S_IFBLK | 0o660, os.makedev(8, 1))
    os.mknod(root / "char-big-minor", stat.S_IFCHR | 0o600, os.makedev(240, 70000))
    os.mknod(root / "whiteout", stat.S_IFCHR, os.makedev(0, 0))
    modes = {"setuid": 0o4755, "setgid": 0o2755, "all-bits": 0o7777, "none": 0o000}
    modes |= {"exec-only": 0o111, "sticky-file": 0o1644}
    for name, mode in modes.items():
        _file(root / name, name.encode() * 30, mode)
    for name, mode in {"sticky-dir": 0o1777, "setgid-dir": 0o2750, "closed-dir": 0o000}.items():
        (root / name).mkdir()
        os.chmod(root / name, mode)
    return 37


def tree_names(root: Path) -> int:
    """255-byte names: ASCII, multibyte UTF-8, non-UTF-8 bytes, awkward characters."""
    bases = [b"a", "é".encode(), "日".encode(), b"\xff\xfe", b" sp ace", b"new\nline", b"-"]
    for i, base in enumerate(bases):
        name = (base * 255)[: 255 - 255 % len(base)]
        name = name + b"x" * (255 - len(name))
        assert len(name) == 255
        p = os.fsencode(root) + b"/" + name
        with open(p, "wb") as f:
            f.write(bytes([i]) * (i * 1000))
    d = os.fsencode(root) + b"/" + b"d" * 255
    os.mkdir(d)
    for i in range(20):
        os.symlink(b"t" * 255, d + b"/" + (b"%03d" % i) * 85)
    for name in [b".hidden", b"..dots", b"...", b"x:y,z", b"back\\slash", b"\x01ctl", b"#"]:
        _file(Path(os.fsdecode(os.fsencode(root) + b"/" + name)), name)
    return 36


def tree_wide(root: Path) -> int:
    """One directory of 10,000 entries (several dirent blocks), mixed kinds."""
    wide = root / "wide"
    wide.mkdir()
    for i in range(10_000):
        p = wide / f"entry-{i:05d}-{'y' * (i % 40)}"
        kind = i % 10
        if kind == 0:
            os.symlink(f"target-{i}", p)
        elif kind == 1:
            p.mkdir()
        elif kind == 2:
            _file(p, b"%d" % i * 30)  # external, most of them distinct
        else:
            _file(p, b"")
    return 10_001


def tree_deep(root: Path) -> int:
    """200 levels of directories, with a file and a symlink at several depths."""
    d = root
    for level in range(200):
        d = d / f"l{level}"
        d.mkdir()
        if level % 50 == 49:
            _file(d / "file", b"deep" * 2000)
            os.symlink("../" * (level + 1), d / "up")
    return 208


def tree_xattrs(root: Path) -> int:
    """user.* and trusted.* (shared and not), an escaped trusted.overlay.*, ACLs."""
    for i in range(12):
        f = _file(root / f"f{i}", b"x" * (i * 500))
        os.setxattr(f, "user.shared", b"same on every file")  # goes to the shared table
        os.setxattr(f, "trusted.shared", b"\x00\x01\x02")
        os.setxattr(f, f"user.own{i}", os.urandom(i * 10))
    os.setxattr(root / "f0", "user.empty", b"")
    os.setxattr(root / "f1", "user." + "n" * 250, b"long name")
    os.setxattr(root / "f2", "user.big", os.urandom(3000))
    os.setxattr(root / "f3", "trusted.overlay.mine", b"escaped and restored")
    os.setxattr(root / "f4", "security.test", b"sec")
    (root / "dir").mkdir()
    os.setxattr(root / "dir", "user.on-dir", b"d")
    os.setxattr(root / "dir", "trusted.overlay.opaque", b"y")  # user's, escaped
    os.symlink("f0", root / "link")
    os.setxattr(root / "link", "trusted.on-link", b"l", follow_symlinks=False)
    acl = bytes.fromhex("02000000") + b"".join(
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + (0xFFFFFFFF).to_bytes(4, "little")
        for tag, perm in ((1, 6), (4, 4), (0x20, 4))
    )
    os.setxattr(root / "f5", "system.posix_acl_access", acl)
    return 15


def tree_owners_times(root: Path) -> int:
    """uid/gid past 16 bits, mtimes negative, with nanoseconds, past 2038 and 2**32."""
    ids = [0, 1, 65534, 65535, 65536, 1_000_000, 2**32 - 2]
    times = [0, -1, -5_000_000_001, 1, 1_234_567_890_123_456_789, (2**32 + 5) * 10**9 + 999]
    for i, uid in enumerate(ids):
        for j, mtime in enumerate(times):
            p = _file(root / f"u{i}-t{j}", b"o" * (100 * j))
            os.chown(p, uid, ids[-1 - i])
            os.utime(p, ns=(mtime, mtime))
    (root / "dir").mkdir()
    os.chown(root / "dir", 4242, 4343)
    os.symlink("x", root / "link")
    os.chown(root / "link", 7, 8, follow_symlinks=False)
    os.utime(root / "link", ns=(777, 777), follow_symlinks=False)
    os.utime(root / "dir", ns=(-(10**18), -(10**18)))
    os.utime(root, ns=(3, 3))
    return 45


CORPUS: dict[str, Callable[[Path], int]] = {
    "types": tree_types,
    "names": tree_names,
    "wide-10000": tree_wide,
    "deep-200": tree_deep,
    "xattrs": tree_xattrs,
    "owners-times": tree_owners_times,
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_reads_back_identical(rig: Rig, name: str) -> None:
    src = rig.ram / "src"
    src.mkdir()
    at_least = CORPUS[name](src)
    union = rig.roundtrip(src, name)
    assert compare(src, union) >= at_least
    # and the reader sees what the kernel sees
    listed = {e.path for e in open_image(rig.disk / f"{name}.cfs").walk()}
    assert len(listed) == sum(1 for _ in src.rglob("*")) + 1


def test_setuid_file_keeps_its_bits_when_mounted(rig: Rig) -> None:
    src = rig.ram / "src"
    src.mkdir()
    _file(src / "su", b"#!/bin/sh\n" * 10, 0o4755)
    union = rig.roundtrip(src, "su")
    assert (union / "su").stat().st_mode == stat.S_IFREG | 0o4755


# --- hard links (dump-style trees) -----------------------------------------------------


def test_hard_links_share_one_inode_through_the_mount(rig: Rig) -> None:
    src = rig.ram / "src"
    (src / "sub").mkdir(parents=True)
    _file(src / "big", b"h" * 9000)
    _file(src / "small", b"tiny")
    tree = scan_tree(src, policy=ALLOW_ALL)
    tree.add_hardlink("/sub/big2", "/big")
    tree.add_hardlink("/big3", "/big")
    tree.add_hardlink("/sub/small2", "/small")
    # as in mkcomposefs dump mode (COMPOSEFS.md §5.2), nlink is the caller's to give
    tree.get("/big").nlink = 3
    tree.get("/small").nlink = 2
    image = rig.disk / "links.cfs"
    write_tree(tree, image, digest_store=rig.objects)
    union = rig.mount(image)
    group = [os.lstat(union / p) for p in ("big", "sub/big2", "big3")]
    assert {st.st_ino for st in group} == {group[0].st_ino}
    assert [st.st_nlink for st in group] == [3, 3, 3]
    for p in ("big", "sub/big2", "big3"):
        assert (union / p).read_bytes() == b"h" * 9000
    small = [os.lstat(union / p) for p in ("small", "sub/small2")]
    assert small[0].st_ino == small[1].st_ino and small[0].st_nlink == 2
    assert (union / "sub" / "small2").read_bytes() == b"tiny"


# --- objects are checked in userspace before mounting ----------------------------------


def test_tampered_object_is_caught_before_mounting(rig: Rig) -> None:
    """The kernel here has no fs-verity: overlayfs would serve a tampered object, so the
    image's objects are verified first (ObjectStore.verify_all)."""
    src = rig.ram / "src"
    src.mkdir()
    _file(src / "f", b"genuine" * 2000)
    image = rig.build(src, "tamper")
    names = open_image(image).objects()
    (name,) = names
    ObjectStore(rig.objects).verify_all(names)
    (rig.objects / name).write_bytes(b"evil!!!" * 2000)
    with pytest.raises(DigestMismatchError, match=name.replace("/", "")):
        ObjectStore(rig.objects).verify_all(names)
    union = rig.mount(image)  # what the check prevents:
    assert (union / "f").read_bytes() == b"evil!!!" * 2000


# --- the comparison itself can fail ----------------------------------------------------

MUTATIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "mode": (lambda s: os.chmod(s / "f", 0o600), r"f: st_mode"),
    "owner": (lambda s: os.chown(s / "f", 5, 5), r"f: st_uid"),
    "mtime": (lambda s: os.utime(s / "f", ns=(9, 9)), r"f: st_mtime_ns"),
    "xattr": (lambda s: os.setxattr(s / "f", "user.new", b"1"), r"f: xattrs"),
    "content": (lambda s: (s / "f").write_bytes(b"F" * 9000), r"f: content differs"),
    "target": (lambda s: os.unlink(s / "l") or os.symlink("g", s / "l"), r"l: symlink"),
    "name": (lambda s: (s / "new").mkdir(), r"/: names \{b'new'\} differ"),
    "rdev": (lambda s: os.unlink(s / "c") or os.mknod(s / "c", 0o20644, 9), r"c: st_rdev"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_compare_notices_each_difference(rig: Rig, mutation: str) -> None:
    src = rig.ram / "src"
    src.mkdir()
    _file(src / "f", b"f" * 9000, 0o644)
    os.symlink("f", src / "l")
    os.mknod(src / "c", 0o20644, os.makedev(1, 3))
    union = rig.roundtrip(src, "mut")
    assert compare(src, union) == 4
    change, match = MUTATIONS[mutation]
    mtime = os.stat(src / "f").st_mtime_ns
    change(src)
    if mutation == "content":  # only the bytes differ
        os.utime(src / "f", ns=(mtime, mtime))
    with pytest.raises(AssertionError, match=match):
        compare(src, union)
