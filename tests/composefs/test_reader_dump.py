"""composefs-info style listings: escaping, dump(5) lines, ls lines."""

from __future__ import annotations

import stat

import pytest

from powernode.verity.composefs.reader import Image
from powernode.verity.composefs.reader.dump import dump_line, escape, ls_line, wants_content
from powernode.verity.composefs.tree import Node, Tree
from powernode.verity.composefs.writer import image_bytes
from powernode.verity.fsverity import fsverity_digest
from tests.composefs.test_reader import sample_tree

T0 = 1_700_000_000
DIGEST_HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("value", "flags", "want"),
    [
        (b"12345", {}, "12345"),
        (b"", {}, ""),
        (b"\n", {}, "\\n"),
        (b"\r\t", {}, "\\r\\t"),
        (b"\\", {}, "\\\\"),
        (b"=", {}, "="),
        (b"foo=bar", {"equal": True}, "foo\\x3dbar"),
        (b"-", {"lone_dash": True}, "\\x2d"),
        (b"-", {}, "-"),
        (b"--", {"lone_dash": True}, "--"),
        (b" ", {}, "\\x20"),
        (b" ", {"allow_space": True}, " "),
        (b"\n\t", {"allow_space": True}, "\\n\\t"),
        (b"Hello World!", {}, "Hello\\x20World!"),
        (b"caf\xc3\xa9\x7f\x00", {}, "caf\\xc3\\xa9\\x7f\\x00"),
    ],
)
def test_escape_like_composefs(value: bytes, flags: dict[str, bool], want: str) -> None:
    assert escape(value, **flags) == want


def vector_f() -> Tree:
    """COMPOSEFS.md §16 F (a dump-file tree) built directly."""
    tree = Tree(Node(stat.S_IFDIR | 0o755, mtime=T0))
    data = Node(
        stat.S_IFREG | 0o644,
        size=300,
        nlink=2,
        uid=1000,
        gid=1000,
        mtime=T0,
        payload=b"ab/cdef",
        digest=bytes.fromhex(DIGEST_HEX),
        xattrs={b"user.k": b"v"},
    )
    tree.add("/data", data)
    tree.add_hardlink("/hl", "/data")
    tree.add("/inl", Node(stat.S_IFREG | 0o644, size=100, content=b"q" * 100, mtime=T0))
    tree.add("/nod", Node(stat.S_IFREG | 0o644, size=300, mtime=T0))
    return tree


def test_dump_of_vector_f() -> None:
    data = image_bytes(vector_f())
    assert fsverity_digest(data).hex() == (
        "3384110125c2e236344c5b835945b2001927b8ee6925980177c395ed4798d26e"
    )
    image = Image.from_bytes(data)
    lines = [dump_line(e, image.read_inline(e) if wants_content(e) else None) for e in image.walk()]
    assert lines == [
        f"/ 4096 40755 2 0 0 0 {T0}.0 - - -",
        f"/data 300 100644 2 1000 1000 0 {T0}.0 ab/cdef - {DIGEST_HEX} user.k=v",
        "/hl 0 @100644 0 0 0 0 0.0 /data - -",
        f"/inl 100 100644 1 0 0 0 {T0}.0 - {'q' * 100} -",
        f"/nod 300 100644 1 0 0 0 {T0}.0 - - -",
    ]


def test_dump_escapes_names_xattrs_and_devices() -> None:
    image = Image.from_bytes(image_bytes(sample_tree()))
    lines = {e.path: dump_line(e) for e in image.walk()}
    assert lines[b"/etc/a b=c\n"].startswith("/etc/a\\x20b=c\\n 1 100644 1 70000 1000 0 ")
    assert lines[b"/bin/sh"].endswith(" tool - -")
    assert lines[b"/dev/null"].startswith(f"/dev/null 0 20666 1 0 0 {0x103} ")
    assert lines[b"/etc/gone"].startswith("/etc/gone 0 20000 1 0 0 0 ")
    assert lines[b"/bin/tool"].endswith(
        " 00/0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f - "
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f security.selinux=bin_t"
    )


def test_dump_escapes_equals_in_xattrs() -> None:
    tree = Tree(Node(stat.S_IFDIR | 0o755, mtime=T0))
    tree.add("/f", Node(stat.S_IFREG, mtime=T0, xattrs={b"user.a=b": b"x=y z", b"user.e": b""}))
    entry = Image.from_bytes(image_bytes(tree)).lookup("/f")
    assert dump_line(entry).endswith(" - - - user.a\\x3db=x\\x3dy\\x20z user.e=")


def test_ls_lines() -> None:
    image = Image.from_bytes(image_bytes(sample_tree()))
    lines = [line for e in image.walk() if (line := ls_line(e)) is not None]
    assert lines[:5] == [
        "/bin/\t",
        "/bin/sh\t-> tool",
        "/bin/tool\t@ 00/0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "/bin/tool2\t@ 00/0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "/dev/\t",
    ]
    assert "/etc/a b=c\\n" in lines
    assert "/" not in lines
