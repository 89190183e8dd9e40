"""The small encoding rules of shared/notes/COMPOSEFS.md, one example each."""

from __future__ import annotations

import pytest

from powernode.errors import ConfigError, SourceTreeError
from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.plan import (
    Inode,
    Plan,
    make_plan,
    metacopy_value,
    split_name,
    xattr_entry_size,
)
from powernode.verity.composefs.tree import Node, Tree
from powernode.verity.composefs.writer import _name_filter, _xattr_entry, image_bytes


@pytest.mark.parametrize(
    ("name", "index", "suffix"),
    [
        (b"user.tag", 1, b"tag"),
        (b"system.posix_acl_access", 2, b""),
        (b"system.posix_acl_default", 3, b""),
        (b"trusted.overlay.opaque", 4, b"overlay.opaque"),
        (b"security.selinux", 6, b"selinux"),
        (b"lustre.x", 0, b"lustre.x"),  # index 5 is never written
    ],
)
def test_xattr_prefixes(name: bytes, index: int, suffix: bytes) -> None:
    assert split_name(name) == (index, suffix)


@pytest.mark.parametrize(
    ("names", "stored"),
    [
        ([b"trusted.overlay.opaque"], 0xFFEFFFFF),
        ([b"trusted.overlay.metacopy", b"trusted.overlay.redirect"], 0x7FFDFFFF),
        ([b"user.tag"], 0xFFFFFFFF & ~(1 << 17)),
        ([b"security.selinux"], 0xFFFFFFFF & ~(1 << 11)),
        ([b"system.posix_acl_access"], 0xFFFFFFFF & ~(1 << 30)),
        ([b"system.posix_acl_default"], 0xFFFFFFFF & ~(1 << 21)),
    ],
)
def test_name_filter(names: list[bytes], stored: int) -> None:
    assert _name_filter(names) == stored


def test_entry_sizes_and_padding() -> None:
    assert xattr_entry_size(b"trusted.overlay.opaque", b"y") == 20
    assert xattr_entry_size(b"trusted.overlay.metacopy", b"\0" * 36) == 56
    assert xattr_entry_size(b"trusted.overlay.redirect", b"/" + b"a" * 65) == 88
    raw = _xattr_entry(b"user.tag", b"blue")
    assert raw == bytes([3, 1, 4, 0]) + b"tagblue" + b"\0"


def test_metacopy_value() -> None:
    d = bytes(range(32))
    assert metacopy_value(d) == bytes([0, 36, 0, 1]) + d
    assert metacopy_value(None) == b""


def _by(plan: Plan, path: bytes) -> Inode:
    return next(i for i in plan.inodes if i.path == path)


def _one_file(size: int, *, content: bool) -> Tree:
    tree = Tree(Node(mode=0o40755))
    data = b"z" * size if content else None
    tree.add("/f", Node(mode=0o100644, size=size, content=data, digest=b"\1" * 32, payload=b"p"))
    return tree


@pytest.mark.parametrize(
    ("size", "blocks", "tail"),
    [(6, 0, 6), (3000, 1, 0), (4096, 1, 0), (4500, 1, 404)],
)
def test_inline_content_split(size: int, blocks: int, tail: int) -> None:
    f = _by(make_plan(_one_file(size, content=True)), b"/f")
    assert (f.n_blocks, f.tail_len) == (blocks, tail)
    assert f.layout == (L.LAYOUT_FLAT_INLINE if tail else L.LAYOUT_FLAT_PLAIN)


@pytest.mark.parametrize(
    ("size", "bits"),
    [(100, 12), (5000, 13), (10**6, 20), (10**12, 40), (2**44, 43), (2**53, 43)],
)
def test_chunkbits(size: int, bits: int) -> None:
    f = _by(make_plan(_one_file(size, content=False)), b"/f")
    assert f.chunkbits == bits and f.layout == L.LAYOUT_CHUNK_BASED


def test_external_over_2_pow_53_is_rejected() -> None:
    with pytest.raises(SourceTreeError, match="at most 2\\*\\*53"):
        _one_file(2**53 + 1, content=False)


def test_large_file_is_extended_and_maps_holes() -> None:
    img = image_bytes(_one_file(2**33, content=False))
    plan = make_plan(_one_file(2**33, content=False))
    f = _by(plan, b"/f")
    assert not f.compact and f.tail_len == 4  # one 8 GiB chunk
    end = f.nid * 32 + 64 + f.xattr_size
    assert img[end : end + 4] == b"\xff\xff\xff\xff"


def test_bad_version_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="version 2"):
        image_bytes(_one_file(1, content=True), version=2)


def test_v1_without_whiteouts_differs_only_in_byte_12() -> None:
    tree = _one_file(100, content=False)
    v0, v1 = image_bytes(tree), image_bytes(tree, version=1)
    assert v0[12] == 0 and v1[12] == 1 and v0[:12] + v0[13:] == v1[:12] + v1[13:]


def test_has_acl_flag_and_escaping() -> None:
    tree = Tree(Node(mode=0o40755, xattrs={b"trusted.overlay.overlay.x": b"1"}))
    tree.add("/a", Node(mode=0o100644, xattrs={b"system.posix_acl_access": b"\2\0\0\0"}))
    img = image_bytes(tree)
    assert img[8] == L.COMPOSEFS_FLAG_HAS_ACL
    root = make_plan(tree).inodes[0]
    assert root.xattrs[b"trusted.overlay.overlay.overlay.x"] == b"1"
    assert root.xattrs[b"trusted.overlay.opaque"] == b"y"


def test_more_than_128_shared_xattrs_spill_inline() -> None:
    xattrs = {b"user.k%03d" % i: b"v" for i in range(140)}
    tree = Tree(Node(mode=0o40755))
    tree.add("/a", Node(mode=0o100644, xattrs=dict(xattrs)))
    tree.add("/b", Node(mode=0o100644, xattrs=dict(xattrs)))
    a = _by(make_plan(tree), b"/a")
    assert len(a.shared_ids) == 128 and len(a.inline_pairs) == 12


def test_root_stub_not_added_over_existing_name_and_copies_selinux() -> None:
    tree = Tree(Node(mode=0o40755, mtime=5, xattrs={b"security.selinux": b"ctx"}))
    tree.add("/0a", Node(mode=0o40755, mtime=5))
    plan = make_plan(tree)
    assert len(plan.inodes) == 1 + 1 + 255
    stubs = [i for i in plan.inodes if i.mode == L.ROOT_STUB_MODE]
    assert len(stubs) == 255 and all(s.xattrs == {b"security.selinux": b"ctx"} for s in stubs)
    assert plan.inodes[0].nlink == 3


def test_root_not_oldest_makes_root_and_stubs_extended() -> None:
    tree = Tree(Node(mode=0o40755, mtime=10))
    tree.add("/old", Node(mode=0o100644, mtime=-100))
    plan = make_plan(tree)
    assert plan.build_time == (-100, 0)
    assert not plan.inodes[0].compact
    assert all(not i.compact for i in plan.inodes if i.mode == L.ROOT_STUB_MODE)
    img = image_bytes(tree)
    assert L.SUPERBLOCK.unpack_from(img, 1024)[7] == -100
