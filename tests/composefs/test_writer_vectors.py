"""Every test vector of shared/notes/COMPOSEFS.md, plus digests checked against mkcomposefs.

Vectors A–F are from the spec (§16). The spec's digests were produced by
mkcomposefs 1.0.8; they were re-checked here with mkcomposefs built from
git ec2573a (composefs 1.0.8) in /tmp, which also produced the digests of
the extra trees in this file (marked so).
"""

from __future__ import annotations

import stat
import struct
from pathlib import Path

import pytest

from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.plan import make_plan
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.tree import Node, Tree
from powernode.verity.composefs.writer import image_bytes, write_image
from powernode.verity.fsverity import fsverity_digest
from tests.conftest import require_root

from .vectors import CORPUS_MIXED, CORPUS_MIXED_EPOCH, VECTOR_D_V0, VECTORS, corpus_mixed

ALLOW = TreePolicy(allow_devices=True, allow_setuid=True)


def _build(tmp_path: Path, name: str) -> tuple[bytes, Tree]:
    require_root()  # chown, mknod and trusted.* xattrs
    builder, _ = VECTORS[name]
    src = tmp_path / name
    builder(src)
    tree = scan_tree(src, policy=ALLOW)
    return image_bytes(tree), tree


def _sb(img: bytes) -> tuple[int, ...]:
    return L.SUPERBLOCK.unpack_from(img, L.SUPERBLOCK_OFFSET)


def _nid_of(img: bytes, tree: Tree, path: str) -> int:
    plan = make_plan(tree)
    want = path.encode()
    return next(i.nid for i in plan.inodes if i.path == want)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_digest(tmp_path: Path, name: str) -> None:
    img, _ = _build(tmp_path, name)
    assert fsverity_digest(img).hex() == VECTORS[name][1]


def test_vector_a_layout(tmp_path: Path) -> None:
    img, _ = _build(tmp_path, "A")
    assert len(img) == 16384
    magic, hver, flags, fver = L.COMPOSEFS_HEADER.unpack_from(img, 0)
    assert (magic, hver, flags, fver) == (L.COMPOSEFS_MAGIC, 1, 0, 0)
    assert img[:4] == bytes.fromhex("9a6278d0")
    assert img[32:1024] == b"\0" * 992
    sb = _sb(img)
    assert sb[0] == L.EROFS_SUPER_MAGIC and sb[2] == 0x6 and sb[3] == 12
    assert sb[5] == 36  # root nid
    assert sb[6] == 257  # inos: root + 256 stubs
    assert (sb[7], sb[8]) == (0, 0)  # build_time
    assert sb[9] == 4 and sb[11] == 2  # blocks, xattr_blkaddr
    root = L.COMPACT_INODE.unpack_from(img, 1152)
    assert root[0] == 0  # compact, FLAT_PLAIN
    assert root[1] == 6  # icount for X = 32
    assert root[4] == 4096 and root[6] == 3  # size, first block
    assert L.XATTR_IBODY_HEADER.unpack_from(img, 1184)[0] == 0xFFEFFFFF


def test_vector_b_details(tmp_path: Path) -> None:
    img, tree = _build(tmp_path, "B")
    assert len(img) == 16384 and _sb(img)[6] == 264
    nids = {
        "/dir": 262,
        "/empty": 281,
        "/hello.txt": 298,
        "/hundred": 300,
        "/link": 306,
        "/dir/big": 308,
        "/dir/sixtyfour": 314,
    }
    for path, nid in nids.items():
        assert _nid_of(img, tree, path) == nid, path
    hundred = L.COMPACT_INODE.unpack_from(img, 300 * 32)
    assert hundred[0] == L.LAYOUT_CHUNK_BASED << 1 and hundred[1] == 37 and hundred[6] == 0
    big = L.COMPACT_INODE.unpack_from(img, 308 * 32)
    assert big[6] == 1  # chunkbits 13
    assert tree.get("/hundred").payload == (
        b"2a/a7269baa451a6a9de06bd75d2657b4be63d3be65a9e09fb5beee8ed7f26dd4"
    )
    assert tree.get("/dir/big").payload == (
        b"ee/5c6c394f62599b2319d546c14a0bf89774b4633bee8b49f26be53b52d0ff3c"
    )
    # the redirect xattr carries the object name behind a "/"
    assert b"/2a/a7269baa451a6a9de06bd75d2657b4be63d3be65a9e09fb5beee8ed7f26dd4" in img
    assert L.XATTR_IBODY_HEADER.unpack_from(img, 300 * 32 + 32)[0] == 0x7FFDFFFF


def test_vector_c_details(tmp_path: Path) -> None:
    img, tree = _build(tmp_path, "C")
    assert (_sb(img)[7], _sb(img)[8]) == (1600000000, 0)
    for path, nid in {"/one": 294, "/owner": 297, "/page": 300, "/two": 309}.items():
        assert _nid_of(img, tree, path) == nid
        assert L.EXTENDED_INODE.unpack_from(img, nid * 32)[0] & 1 == 1, path
    page = L.EXTENDED_INODE.unpack_from(img, 300 * 32)
    assert (page[9], page[10]) == (1800000000, 123456789)
    plan = make_plan(tree)
    assert (b"user.tag", b"blue") in plan.shared_table
    one = next(i for i in plan.inodes if i.path == b"/one")
    assert one.shared_ids == [456]
    pg = next(i for i in plan.inodes if i.path == b"/page")
    assert pg.xattrs[b"trusted.overlay.overlay.opaque"] == b"y"
    assert tree.get("/page").payload == (
        b"6b/ec3b8b59b3802eeb74ba869e53d05e18b488ad1d5f71c7f23e363cde3cea3f"
    )


def test_vector_d_versions(tmp_path: Path) -> None:
    img, tree = _build(tmp_path, "D")
    assert struct.unpack_from("<I", img, 12)[0] == 1  # auto-raised to version 1
    v0 = image_bytes(tree, version=0)
    assert fsverity_digest(v0).hex() == VECTOR_D_V0
    plan = make_plan(tree)
    by = {i.path: i for i in plan.inodes}
    assert by[b"/null"].rdev & 0xFFFFFFFF == 0x103
    assert by[b"/sda1"].rdev & 0xFFFFFFFF == 0x801
    assert by[b"/sub/gone"].mode == 0o100000 and len(by[b"/sub/gone"].inline_pairs) == 2
    assert len(by[b"/sub"].xattrs) == 4
    assert len(make_plan(tree, version=0).inodes[by[b"/sub"].ino].xattrs) == 2


def test_vector_e_details(tmp_path: Path) -> None:
    img, tree = _build(tmp_path, "E")
    sb = _sb(img)
    assert len(img) == 36864 and sb[6] == 560 and sb[9] == 9
    assert L.COMPACT_INODE.unpack_from(img, 1152)[6] == 6  # root dir block
    assert _nid_of(img, tree, "/longlink") == 384
    ll = L.COMPACT_INODE.unpack_from(img, 384 * 32)
    assert ll[6] == 7 and ll[0] == 0  # out of line, block 7
    assert img[7 * 4096 : 7 * 4096 + 4095] == b"T" * 4095
    many = next(i for i in make_plan(tree).inodes if i.path == b"/many")
    assert many.size == 5104 and many.first_block == 8 and many.tail_len == 1008
    assert len(many.dir_groups[0]) == 240 and len(many.dir_groups[1]) == 63


def vector_f_tree() -> Tree:
    """Vector F's dump file, assembled with Tree.add (hard link, inline content, no digest)."""
    tree = Tree(Node(mode=0o40755, mtime=1700000000))
    tree.add(
        "/data",
        Node(
            mode=0o100644,
            size=300,
            nlink=2,
            uid=1000,
            gid=1000,
            mtime=1700000000,
            payload=b"ab/cdef",
            xattrs={b"user.k": b"v"},
            digest=bytes.fromhex("0123456789abcdef" * 4),
        ),
    )
    tree.add_hardlink("/hl", "/data")
    tree.add("/inl", Node(mode=0o100644, size=100, mtime=1700000000, content=b"q" * 100))
    tree.add("/nod", Node(mode=0o100644, size=300, mtime=1700000000))
    return tree


def test_vector_f_dump_tree() -> None:
    tree = vector_f_tree()
    img = image_bytes(tree)
    assert fsverity_digest(img).hex() == (
        "3384110125c2e236344c5b835945b2001927b8ee6925980177c395ed4798d26e"
    )
    plan = make_plan(tree)
    assert len(plan.inodes) == 260
    data = next(i for i in plan.inodes if i.path == b"/data")
    assert data.nid == 257 and data.nlink == 2
    assert data.xattrs[b"trusted.overlay.redirect"] == b"/ab/cdef"
    root = plan.inodes[0]
    assert dict(root.entries)[b"hl"] is data
    inl = next(i for i in plan.inodes if i.path == b"/inl")
    assert inl.layout == L.LAYOUT_FLAT_INLINE and inl.tail_len == 100
    nod = next(i for i in plan.inodes if i.path == b"/nod")
    assert nod.xattrs[b"trusted.overlay.metacopy"] == b""
    assert b"trusted.overlay.redirect" not in nod.xattrs


def test_write_image_returns_digest_and_writes_bytes(tmp_path: Path) -> None:
    out = tmp_path / "f.cfs"
    with out.open("wb") as f:
        digest = write_image(vector_f_tree(), f)
    assert digest == fsverity_digest(out.read_bytes()).hex()
    assert stat.S_ISREG(out.stat().st_mode) and out.stat().st_size % 4096 == 0


def test_corpus_mixed_matches_mkcomposefs(tmp_path: Path) -> None:
    """Digests produced by the real mkcomposefs 1.0.8 (see vectors.corpus_mixed)."""
    require_root()
    src = tmp_path / "mixed"
    corpus_mixed(src)
    img = image_bytes(scan_tree(src, policy=ALLOW))
    assert img[8] == L.COMPOSEFS_FLAG_HAS_ACL and img[12] == 1  # ACL and whiteouts present
    assert fsverity_digest(img).hex() == CORPUS_MIXED
    epoch = scan_tree(src, policy=TreePolicy(allow_devices=True, use_epoch=True))
    assert fsverity_digest(image_bytes(epoch)).hex() == CORPUS_MIXED_EPOCH
