"""Properties of the writer over random trees (hypothesis): layout invariants and
independence from insertion order."""

from __future__ import annotations

import itertools
import random
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.plan import make_plan
from powernode.verity.composefs.tree import Node, Tree
from powernode.verity.composefs.writer import emit

names = st.binary(min_size=1, max_size=40).filter(lambda n: b"/" not in n and b"\0" not in n)
names = names.filter(lambda n: n not in (b".", b".."))
xattrs = st.dictionaries(
    st.sampled_from([b"user.a", b"user.b", b"trusted.overlay.x", b"security.s", b"trusted.t"]),
    st.binary(max_size=30),
    max_size=3,
)
mtimes = st.sampled_from([0, 5, -3, 1700000000])


@st.composite
def leaves(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from(["empty", "inline", "external", "link", "fifo", "whiteout"]))
    common = {
        "mtime": draw(mtimes),
        "uid": draw(st.sampled_from([0, 1000, 70000])),
        "xattrs": draw(xattrs),
    }
    if kind == "inline":
        data = draw(st.binary(min_size=1, max_size=64))
        return Node(mode=0o100644, size=len(data), content=data, **common)
    if kind == "external":
        size = draw(st.integers(65, 2**40))
        digest = draw(st.binary(min_size=32, max_size=32))
        return Node(mode=0o100644, size=size, digest=digest, payload=b"ab/cd", **common)
    if kind == "link":
        return Node(mode=0o120777, target=b"t" * draw(st.integers(1, 4095)), **common)
    if kind == "fifo":
        return Node(mode=0o10644, **common)
    if kind == "whiteout":
        return Node(mode=0o20000, **common)
    return Node(mode=0o100644, **common)


entries = st.lists(
    st.tuples(st.sampled_from([b"", b"d1/", b"d2/", b"d1/d3/"]), names, leaves()),
    max_size=40,
    unique_by=lambda e: e[0] + e[1],
)


def _build(items: list[tuple[bytes, bytes, Node]]) -> Tree:
    tree = Tree(Node(mode=0o40755, mtime=7))
    for d in (b"d1", b"d2", b"d1/d3"):
        tree.add(d, Node(mode=0o40755, mtime=7))
    for prefix, name, node in items:
        if prefix + name not in (b"d1", b"d2", b"d1/d3"):
            tree.add(prefix + name, node)
    return tree


@settings(max_examples=60, deadline=None)
@given(entries)
def test_layout_invariants(items: list[tuple[bytes, bytes, Node]]) -> None:
    tree = _build(items)
    plan = make_plan(tree)
    img = emit(plan)
    sb = L.SUPERBLOCK.unpack_from(img, L.SUPERBLOCK_OFFSET)
    assert len(img) == sb[9] * L.BLOCK_SIZE
    assert sb[6] == len(plan.inodes) >= 257
    spans = sorted(
        (i.nid * 32, i.nid * 32 + i.isize + i.xattr_size + i.tail_len) for i in plan.inodes
    )
    assert spans[0][0] == L.INODE_TABLE_START
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert spans[-1][1] <= plan.inodes_end <= plan.data_start
    for ino in plan.inodes:
        if stat.S_ISLNK(ino.mode) and ino.tail_len:  # inline symlinks never cross a block
            start = ino.nid * 32
            assert start // 4096 == (start + ino.isize + ino.xattr_size + ino.tail_len - 1) // 4096
        if ino.tail_len and not stat.S_ISLNK(ino.mode):
            tail_start = ino.nid * 32 + ino.isize + ino.xattr_size
            assert tail_start // 4096 == (tail_start + ino.tail_len - 1) // 4096


@settings(max_examples=30, deadline=None)
@given(entries, st.randoms(use_true_random=False))
def test_insertion_order_does_not_matter(
    items: list[tuple[bytes, bytes, Node]], rnd: random.Random
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert emit(make_plan(_build(items))) == emit(make_plan(_build(shuffled)))
