"""A corrupt image is refused with ImageFormatError: never a crash, never a loop.

Named cases corrupt one structure each and check the message says what and
where; the hypothesis tests overwrite and truncate valid images at random.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powernode.errors import ImageFormatError
from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.reader import Image, ReaderLimits
from powernode.verity.composefs.reader.inode import Inode, parse_inode
from powernode.verity.composefs.reader.super import Blob, parse_superblock
from powernode.verity.composefs.tree import Node, Tree, object_name
from powernode.verity.composefs.writer import image_bytes

T0 = 1_700_000_000
DIR = stat.S_IFDIR | 0o755
REG = stat.S_IFREG | 0o644
DIGEST = bytes(range(32))


def base_tree() -> Tree:
    tree = Tree(Node(DIR, mtime=T0))
    tree.add("/a", Node(REG, size=2, content=b"hi", xattrs={b"user.k": b"v"}, mtime=T0))
    tree.add("/b", Node(REG, size=5000, digest=DIGEST, payload=object_name(DIGEST), mtime=T0))
    tree.add("/d1", Node(DIR, mtime=T0))
    tree.add("/d1/d2", Node(DIR, mtime=T0))
    tree.add("/d1/d2/f", Node(REG, mtime=T0, xattrs={b"user.shared": b"1"}))
    tree.add("/g", Node(REG, mtime=T0, xattrs={b"user.shared": b"1"}))
    tree.add("/s", Node(stat.S_IFLNK | 0o777, target=b"a", mtime=T0))
    tree.add("/x", Node(DIR, mtime=T0))
    tree.add("/y", Node(DIR, mtime=T0))
    return tree


BASE = image_bytes(base_tree())


def inode(data: bytes, path: str) -> Inode:
    """The parsed inode at ``path`` of a valid image (to find bytes to corrupt)."""
    nid = Image.from_bytes(data, raw=True).lookup(path).nid
    return parse_inode(Blob(data, "t", len(data)), parse_superblock(data, "t"), nid)


def dir_block(data: bytes, path: str) -> int:
    """Byte offset of the (first) dirent group of the directory at ``path``."""
    ino = inode(data, path)
    return ino.i_u * L.BLOCK_SIZE if ino.full_blocks else ino.tail_offset


def dirent_offset(data: bytes, dir_path: str, name: bytes) -> int:
    start = dir_block(data, dir_path)
    count = struct.unpack_from("<H", data, start + 8)[0] // 12
    for i in range(count):
        nameoff = struct.unpack_from("<H", data, start + 12 * i + 8)[0]
        if data[start + nameoff : start + nameoff + len(name)] == name:
            return start + 12 * i
    raise AssertionError(f"no dirent {name!r}")


def patch(data: bytes, off: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, off, *values)
    return bytes(out)


def refuse(data: bytes, match: str, **kw: object) -> None:
    with pytest.raises(ImageFormatError, match=match) as info:
        list(Image.from_bytes(data, source="img.cfs", **kw).walk())  # type: ignore[arg-type]
    assert str(info.value).startswith("img.cfs: ")
    assert "\n" not in str(info.value)


SB = L.SUPERBLOCK_OFFSET


def _root_nid_of_file(d: bytes) -> bytes:
    return patch(d, SB + 14, "<H", inode(d, "/a").nid)


def _loop_to_ancestor(d: bytes) -> bytes:
    return patch(d, dirent_offset(d, "/d1", b"d2"), "<Q", inode(d, "/d1").nid)


def _dir_hard_link(d: bytes) -> bytes:
    return patch(d, dirent_offset(d, "/", b"y"), "<Q", inode(d, "/x").nid)


def _nameoff_past_block(d: bytes) -> bytes:
    return patch(d, dirent_offset(d, "/d1", b"d2") + 8, "<H", 5000)


def _first_nameoff_odd(d: bytes) -> bytes:
    return patch(d, dir_block(d, "/d1") + 8, "<H", 13)


def _ftype_mismatch(d: bytes) -> bytes:
    return patch(d, dirent_offset(d, "/", b"a") + 10, "<B", L.FT_DIR)


def _unsorted(d: bytes) -> bytes:
    off = dirent_offset(d, "/", b"s")
    nameoff = struct.unpack_from("<H", d, off + 8)[0]
    return patch(d, dir_block(d, "/") + nameoff, "<B", ord("0"))


def _slash_in_name(d: bytes) -> bytes:
    off = dirent_offset(d, "/", b"x")
    nameoff = struct.unpack_from("<H", d, off + 8)[0]
    return patch(d, dir_block(d, "/") + nameoff, "<B", ord("/"))


def _shared_count_past_area(d: bytes) -> bytes:
    return patch(d, inode(d, "/a").xattr_offset + 4, "<B", 200)


def _icount_past_image(d: bytes) -> bytes:
    return patch(d, inode(d, "/a").offset + 2, "<H", 0xFFFF)


def _xattr_entry_past_area(d: bytes) -> bytes:
    ino = inode(d, "/a")
    return patch(d, ino.xattr_offset + 12, "<B", 200)  # name_len of the only entry


def _shared_id_past_image(d: bytes) -> bytes:
    return patch(d, inode(d, "/g").xattr_offset + 12, "<I", 0x3FFFFFFF)


def _chunk_past_image(d: bytes) -> bytes:
    return patch(d, inode(d, "/b").tail_offset, "<I", 0x00FFFFFF)


def _chunk_format(d: bytes) -> bytes:
    return patch(d, inode(d, "/b").offset + 16, "<I", 0x80)


def _compressed(d: bytes) -> bytes:
    return patch(d, inode(d, "/a").offset, "<H", 1 << 1)


def _empty_symlink(d: bytes) -> bytes:
    return patch(d, inode(d, "/s").offset + 8, "<I", 0)


def _bad_mode(d: bytes) -> bytes:
    return patch(d, inode(d, "/a").offset + 4, "<H", 0o170644)


def _dir_block_out_of_range(d: bytes) -> bytes:
    return patch(d, inode(d, "/").offset + 16, "<I", 0x10000)


def _dot_elsewhere(d: bytes) -> bytes:
    return patch(d, dirent_offset(d, "/d1", b"."), "<Q", inode(d, "/x").nid)


CASES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "bad-magic": (
        lambda d: patch(d, SB, "<I", 0x12345678),
        r"bad EROFS magic 0x12345678 at byte 1024",
    ),
    "truncated-superblock": (lambda d: d[:1100], r"superblock at byte 1024 needs 128 bytes"),
    "truncated-image": (lambda d: d[:-4096], r"truncated"),
    "tiny": (lambda d: d[:10], r"too small"),
    "block-size": (lambda d: patch(d, SB + 12, "<B", 9), r"block size 2\^9 at byte 1036"),
    "incompat-feature": (lambda d: patch(d, SB + 80, "<I", 0x80), r"incompatible features 0x80"),
    "cfs-header-version": (lambda d: patch(d, 4, "<I", 2), r"composefs header version 2 at byte 4"),
    "cfs-format-version": (lambda d: patch(d, 12, "<I", 9), r"format version 9 at byte 12"),
    "root-nid-out-of-range": (lambda d: patch(d, SB + 14, "<H", 0xFFFF), r"root nid 65535"),
    "root-not-a-directory": (_root_nid_of_file, r"root nid \d+ is not a directory"),
    "dirent-nameoff-past-block": (_nameoff_past_block, r"directory nid \d+, block 0: dirent 1"),
    "first-nameoff-odd": (_first_nameoff_odd, r"first nameoff 13 is not a multiple of 12"),
    "directory-loop": (_loop_to_ancestor, r"directory loop: b'/d1/d2' points at nid \d+"),
    "directory-hard-link": (_dir_hard_link, r"directory loop: b'/y' .* already listed as b'/x'"),
    "dot-elsewhere": (_dot_elsewhere, r"'\.' points at nid"),
    "dirent-type-mismatch": (_ftype_mismatch, r"dirent b'/a' says file type 2"),
    "unsorted-dirents": (_unsorted, r"is not after .* \(unsorted or duplicate entries\)"),
    "slash-in-name": (_slash_in_name, r"invalid name b'/'"),
    "xattr-shared-count-past-area": (_shared_count_past_area, r"200 shared ids run past"),
    "xattr-icount-past-image": (
        _icount_past_image,
        r"nid \d+: xattr area at byte \d+ needs 262148 bytes",
    ),
    "xattr-entry-past-area": (_xattr_entry_past_area, r"entry of \d+ bytes runs past"),
    "xattr-shared-id-past-image": (_shared_id_past_image, r"shared id 1073741823"),
    "chunk-index-out-of-range": (_chunk_past_image, r"chunk 0 at byte \d+ points at block"),
    "chunk-format": (_chunk_format, r"unsupported chunk format 0x80"),
    "compressed-layout": (_compressed, r"compressed datalayout 1 is not supported"),
    "empty-symlink": (_empty_symlink, r"symlink target length 0"),
    "unknown-file-type": (_bad_mode, r"unknown file type in mode"),
    "dir-blocks-out-of-range": (_dir_block_out_of_range, r"1 data blocks at byte"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_named_corruption_is_refused(name: str) -> None:
    corrupt, match = CASES[name]
    bad = corrupt(BASE)
    assert bad != BASE
    refuse(bad, match)


def test_base_image_is_valid() -> None:
    paths = [e.path for e in Image.from_bytes(BASE).walk()]
    assert paths == [b"/", b"/a", b"/b", b"/d1", b"/d1/d2", b"/d1/d2/f", b"/g", b"/s", b"/x", b"/y"]


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (ReaderLimits(max_depth=1), r"b'/d1/d2' is nested deeper than 1"),
        (ReaderLimits(max_entries=5), r"more than 5 entries"),
        (ReaderLimits(max_xattrs_per_inode=0), r"more than 0 in one inode"),
    ],
    ids=["depth", "entries", "xattrs"],
)
def test_limits_are_enforced(limits: ReaderLimits, match: str) -> None:
    refuse(BASE, match, limits=limits)


def test_read_limit() -> None:
    image = Image.from_bytes(BASE, limits=ReaderLimits(max_read_bytes=1))
    with pytest.raises(ImageFormatError, match="2 bytes of content exceed the read limit 1"):
        image.read_inline(image.lookup("/a"))


def _exercise(data: bytes) -> None:
    """Everything a caller can do; only ImageFormatError may come out."""
    limits = replace(ReaderLimits(), max_read_bytes=1 << 20)
    try:
        for raw in (False, True):
            image = Image.from_bytes(data, limits=limits, raw=raw)
            for n, entry in enumerate(image.walk()):
                if entry.inline:
                    image.read_inline(entry)
                if n % 64 == 0:
                    image.lookup(entry.path)
    except ImageFormatError as e:
        assert str(e)


def _interesting_offsets(data: bytes) -> list[int]:
    """Superblock, inode records and directory blocks: where corruption bites."""
    image = Image.from_bytes(data, raw=True)
    blob, sb = Blob(data, "t", len(data)), image.superblock
    spots = list(range(0, 32)) + list(range(SB, SB + 128))
    for entry in image.walk():
        ino = parse_inode(blob, sb, entry.nid)
        spots += range(ino.offset, ino.record_end)
        if ino.fmt == stat.S_IFDIR and ino.full_blocks:
            spots += range(ino.i_u * L.BLOCK_SIZE, ino.i_u * L.BLOCK_SIZE + 256)
    return sorted(set(spots))


SPOTS = _interesting_offsets(BASE)
FUZZ = settings(
    max_examples=300,
    deadline=5000,  # a bug-catcher for hangs, not a timing assertion
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(SPOTS), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    )
)
def test_fuzz_overwritten_bytes(edits: list[tuple[int, int]]) -> None:
    data = bytearray(BASE)
    for off, value in edits:
        data[off] = value
    _exercise(bytes(data))


@FUZZ
@given(
    off=st.sampled_from(SPOTS),
    word=st.sampled_from([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 36, 12, 4096]),
    width=st.sampled_from(["<B", "<H", "<I", "<Q"]),
)
def test_fuzz_overwritten_fields(off: int, word: int, width: str) -> None:
    size = struct.calcsize(width)
    data = bytearray(BASE)
    data[off : off + size] = (word & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    _exercise(bytes(data[: len(BASE)]))


@FUZZ
@given(length=st.integers(0, len(BASE) - 1))
def test_fuzz_truncated(length: int) -> None:
    with pytest.raises(ImageFormatError):
        _exercise_strict(BASE[:length])


def _exercise_strict(data: bytes) -> None:
    list(Image.from_bytes(data).walk())


def test_overlapping_inodes_are_refused() -> None:
    """An inode hidden inside another's xattr value: each parses, together they overlap."""
    fifo = L.COMPACT_INODE.pack(0, 0, stat.S_IFIFO | 0o644, 1, 0, 0, 0, 99, 0, 0, 0)
    tree = Tree(Node(DIR, mtime=T0))
    # core 32 + ibody header 12 + entry header 4 + 16-byte suffix: the value is 32-aligned
    tree.add("/a", Node(REG, mtime=T0, xattrs={b"user.abcdefghijklmnop": fifo}))
    tree.add("/y", Node(stat.S_IFIFO | 0o644, mtime=T0))
    data = image_bytes(tree)
    hidden = inode(data, "/a").offset + 64
    assert data[hidden : hidden + 32] == fifo
    bad = patch(data, dirent_offset(data, "/", b"y"), "<Q", hidden // L.SLOT_SIZE)
    refuse(bad, r"inode nid \d+ \(b'/y'\) at bytes \d+\.\.\d+ overlaps another inode")
