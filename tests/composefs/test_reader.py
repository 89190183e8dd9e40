"""The reader on composefs images from the writer: walk, lookup, content, objects.

Trees are built in memory (no root, no filesystem) and written with
``image_bytes``; vector B of COMPOSEFS.md §16 is rebuilt the same way so the
reader can be checked against the nids the spec lists.
"""

from __future__ import annotations

import os
import stat

import pytest

from powernode.verity.composefs.reader import Entry, EntryType, Image, open_image
from powernode.verity.composefs.tree import Node, Tree, object_name
from powernode.verity.composefs.writer import image_bytes
from powernode.verity.fsverity import fsverity_digest

T0 = 1_700_000_000
DIR = stat.S_IFDIR | 0o755
REG = stat.S_IFREG | 0o644
TOOL_DIGEST = bytes(range(32))
LONG = b"L" * 255


def _ext(size: int, digest: bytes, **kw: object) -> Node:
    return Node(REG, size=size, digest=digest, payload=object_name(digest), mtime=T0, **kw)  # type: ignore[arg-type]


def sample_tree() -> Tree:
    """Every kind of entry composefs stores, with names that need escaping."""
    tree = Tree(Node(DIR, mtime=T0))
    tree.add("/bin", Node(DIR, mtime=T0))
    tree.add("/bin/tool", _ext(100_000, TOOL_DIGEST, xattrs={b"security.selinux": b"bin_t"}))
    tree.add_hardlink("/bin/tool2", "/bin/tool")
    tree.add("/bin/sh", Node(stat.S_IFLNK | 0o777, target=b"tool", mtime=T0))
    tree.add("/dev", Node(DIR, mtime=T0))
    tree.add("/dev/null", Node(stat.S_IFCHR | 0o666, rdev=os.makedev(1, 3), mtime=T0))
    tree.add("/dev/sda1", Node(stat.S_IFBLK | 0o660, rdev=os.makedev(8, 1), gid=6, mtime=T0))
    tree.add("/empty", Node(REG, mtime=T0 + 5, mtime_nsec=7))
    tree.add("/etc", Node(DIR, mtime=T0))
    hosts = b"127.0.0.1 localhost\n"
    tree.add(
        "/etc/hosts",
        Node(REG, size=len(hosts), content=hosts, xattrs={b"user.tag": b"blue"}, mtime=T0),
    )
    tree.add("/etc/gone", Node(stat.S_IFCHR, rdev=0, mtime=T0))
    tree.add("/etc/a b=c\n", Node(REG, size=1, content=b"x", uid=70000, gid=1000, mtime=T0))
    tree.add("/many", Node(DIR, mtime=T0))
    for i in range(300):
        tree.add(f"/many/f{i:03d}", Node(REG, mtime=T0))
    tree.add(b"/many/" + LONG, Node(REG, mtime=T0))
    tree.add("/run", Node(DIR, mtime=T0, xattrs={b"trusted.overlay.opaque": b"y"}))
    tree.add("/run/fifo", Node(stat.S_IFIFO | 0o600, mtime=T0))
    return tree


@pytest.fixture(scope="module")
def sample() -> bytes:
    return image_bytes(sample_tree())


@pytest.fixture(scope="module")
def entries(sample: bytes) -> dict[bytes, Entry]:
    return {e.path: e for e in Image.from_bytes(sample).walk()}


def test_walk_is_preorder_in_name_order(sample: bytes) -> None:
    paths = [e.path for e in Image.from_bytes(sample).walk()]
    many = [b"/many/" + LONG] + [f"/many/f{i:03d}".encode() for i in range(300)]
    assert paths == [
        b"/",
        b"/bin",
        b"/bin/sh",
        b"/bin/tool",
        b"/bin/tool2",
        b"/dev",
        b"/dev/null",
        b"/dev/sda1",
        b"/empty",
        b"/etc",
        b"/etc/a b=c\n",
        b"/etc/gone",
        b"/etc/hosts",
        b"/many",
        *many,
        b"/run",
        b"/run/fifo",
    ]


def test_metadata_of_each_kind(entries: dict[bytes, Entry]) -> None:
    tool = entries[b"/bin/tool"]
    assert (tool.type, tool.mode, tool.size, tool.digest) == (
        EntryType.FILE,
        REG,
        100_000,
        TOOL_DIGEST,
    )
    assert tool.payload == object_name(TOOL_DIGEST)
    assert tool.object == object_name(TOOL_DIGEST).decode()
    assert not tool.inline
    assert tool.xattrs == {b"security.selinux": b"bin_t"}
    assert entries[b"/bin/sh"].symlink == b"tool"
    assert entries[b"/bin/sh"].type is EntryType.SYMLINK
    null = entries[b"/dev/null"]
    assert (null.type, null.rdev, stat.S_IMODE(null.mode)) == (
        EntryType.CHAR,
        os.makedev(1, 3),
        0o666,
    )
    sda = entries[b"/dev/sda1"]
    assert (sda.type, sda.rdev, sda.gid) == (EntryType.BLOCK, os.makedev(8, 1), 6)
    assert entries[b"/empty"].mtime == (T0 + 5, 7)
    assert entries[b"/empty"].size == 0
    assert not entries[b"/empty"].inline
    odd = entries[b"/etc/a b=c\n"]
    assert (odd.uid, odd.gid, odd.inline) == (70000, 1000, True)
    assert entries[b"/run/fifo"].type is EntryType.FIFO
    assert entries[b"/"].nlink == 2 + 5  # bin, dev, etc, many, run
    assert entries[b"/many/" + LONG].size == 0


def test_cooked_mode_hides_composefs_internals(entries: dict[bytes, Entry]) -> None:
    # no root stubs, no root opaque marker; user xattrs unescaped
    assert not any(len(p) == 3 and p[1:] in (b"00", b"ff") for p in entries)
    assert entries[b"/"].xattrs == {}
    # a user's overlay xattr is escaped on write and unescaped on read
    assert entries[b"/run"].xattrs == {b"trusted.overlay.opaque": b"y"}
    # /etc holds a whiteout: its opaque "x" markers are composefs's, not the user's
    assert entries[b"/etc"].xattrs == {}
    assert entries[b"/etc/hosts"].xattrs == {b"user.tag": b"blue"}
    gone = entries[b"/etc/gone"]
    assert (gone.type, gone.rdev, gone.size, gone.xattrs) == (EntryType.CHAR, 0, 0, {})


def test_raw_mode_shows_the_image_as_stored(sample: bytes) -> None:
    raw = {e.path: e for e in Image.from_bytes(sample, raw=True).walk()}
    stubs = [p for p in raw if len(p) == 3 and raw[p].type is EntryType.CHAR]
    assert len(stubs) == 256
    assert raw[b"/"].xattrs == {b"trusted.overlay.opaque": b"y"}
    assert raw[b"/run"].xattrs == {b"trusted.overlay.overlay.opaque": b"y"}
    assert raw[b"/etc"].xattrs == {
        b"trusted.overlay.overlay.opaque": b"x",
        b"trusted.overlay.overlay.whiteouts": b"",
        b"user.overlay.opaque": b"x",
        b"user.overlay.whiteouts": b"",
    }
    tool = raw[b"/bin/tool"]
    assert tool.xattrs[b"trusted.overlay.redirect"] == b"/" + object_name(TOOL_DIGEST)
    assert tool.xattrs[b"trusted.overlay.metacopy"][4:] == TOOL_DIGEST
    gone = raw[b"/etc/gone"]
    assert gone.type is EntryType.FILE
    assert b"trusted.overlay.overlay.whiteout" in gone.xattrs


def test_hard_link_shares_the_inode(entries: dict[bytes, Entry]) -> None:
    tool, link = entries[b"/bin/tool"], entries[b"/bin/tool2"]
    assert link.nid == tool.nid
    assert link.hardlink_to == b"/bin/tool"
    assert tool.hardlink_to is None
    assert link.digest == tool.digest


def test_lookup(sample: bytes, entries: dict[bytes, Entry]) -> None:
    image = Image.from_bytes(sample)
    assert image.lookup("/etc/hosts") == entries[b"/etc/hosts"]
    assert image.lookup(b"/many/" + LONG).nid == entries[b"/many/" + LONG].nid
    assert image.lookup("/").path == b"/"
    assert image.lookup("many/f299").path == b"/many/f299"
    for missing in ("/nope", "/etc/hosts/x", "/00", "/etc/../bin"):
        with pytest.raises(FileNotFoundError, match="no '"):
            image.lookup(missing)
    assert Image.from_bytes(sample, raw=True).lookup("/00").type is EntryType.CHAR


def test_read_inline(sample: bytes, entries: dict[bytes, Entry]) -> None:
    image = Image.from_bytes(sample)
    assert image.read_inline(entries[b"/etc/hosts"]) == b"127.0.0.1 localhost\n"
    assert image.read_inline(entries[b"/empty"]) == b""
    with pytest.raises(ValueError, match="not stored in the image"):
        image.read_inline(entries[b"/bin/tool"])
    with pytest.raises(ValueError, match="not stored in the image"):
        image.read_inline(entries[b"/etc"])


def test_objects(sample: bytes) -> None:
    assert Image.from_bytes(sample).objects() == {object_name(TOOL_DIGEST).decode()}


def test_open_image_from_path_and_bytes(tmp_path: os.PathLike[str], sample: bytes) -> None:
    path = os.path.join(tmp_path, "img.cfs")
    with open(path, "wb") as f:
        f.write(sample)
    from_path = open_image(path)
    assert from_path.is_composefs
    assert from_path.header is not None
    assert from_path.header.format_version == 1  # the tree has a whiteout (§13)
    assert [e.path for e in from_path.walk()] == [e.path for e in open_image(sample).walk()]


def _vector_b() -> Tree:
    tree = Tree(Node(DIR, mtime=T0))
    tree.add("/dir", Node(DIR, mtime=T0))
    tree.add("/hello.txt", Node(REG, size=6, content=b"hello\n", mtime=T0))
    tree.add("/empty", Node(REG, mtime=T0))
    tree.add("/hundred", _ext(100, fsverity_digest(b"a" * 100)))
    tree.add("/dir/big", _ext(5000, fsverity_digest(b"b" * 5000)))
    tree.add("/dir/sixtyfour", Node(REG, size=64, content=b"c" * 64, mtime=T0))
    tree.add("/link", Node(stat.S_IFLNK | 0o777, target=b"hello.txt", mtime=T0))
    return tree


def test_vector_b_nids_and_objects_match_the_spec() -> None:
    data = image_bytes(_vector_b())
    # the tree is vector B exactly: same digest as mkcomposefs (COMPOSEFS.md §16)
    assert fsverity_digest(data).hex() == (
        "6f2e426adef1422798271038acd203a965e0227a8f3d46dffde48737acf5efb4"
    )
    image = Image.from_bytes(data)
    nids = {e.path: e.nid for e in image.walk()}
    assert nids == {
        b"/": 36,
        b"/dir": 262,
        b"/empty": 281,
        b"/hello.txt": 298,
        b"/hundred": 300,
        b"/link": 306,
        b"/dir/big": 308,
        b"/dir/sixtyfour": 314,
    }
    assert image.objects() == {
        "2a/a7269baa451a6a9de06bd75d2657b4be63d3be65a9e09fb5beee8ed7f26dd4",
        "ee/5c6c394f62599b2319d546c14a0bf89774b4633bee8b49f26be53b52d0ff3c",
    }
    assert image.read_inline(image.lookup("/dir/sixtyfour")) == b"c" * 64
    assert image.superblock.inos == 264


def test_out_of_line_symlink_and_long_dir() -> None:
    """Vector E's shapes: a 4095-byte target in its own block, a dir with a tail."""
    tree = Tree(Node(DIR, mtime=T0))
    tree.add("/longlink", Node(stat.S_IFLNK | 0o777, target=b"T" * 4095, mtime=T0))
    tree.add("/many", Node(DIR, mtime=T0))
    for i in range(300):
        tree.add(f"/many/f{i:03d}", Node(REG, mtime=T0))
    image = Image.from_bytes(image_bytes(tree))
    assert image.lookup("/longlink").symlink == b"T" * 4095
    assert image.lookup("/many").size > 4096  # one full block and an inline tail
    assert sum(1 for e in image.walk() if e.path.startswith(b"/many/")) == 300
