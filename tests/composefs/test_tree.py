"""Tree.add and its validation: what the toolchain and dump input go through."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.errors import SourceTreeError
from powernode.verity.composefs.tree import HardLink, Node, Tree, split_path, tree_path


def _tree() -> Tree:
    tree = Tree(Node(mode=0o40755))
    tree.add("/etc", Node(mode=0o40755))
    return tree


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/etc/passwd", [b"etc", b"passwd"]),
        ("etc//./passwd", [b"etc", b"passwd"]),
        ("/etc/../usr/x", [b"usr", b"x"]),
        (b"/a/\xff", [b"a", b"\xff"]),
    ],
)
def test_split_path(path: str | bytes, parts: list[bytes]) -> None:
    assert split_path(path) == parts


@pytest.mark.parametrize("path", ["../x", "/..", "/etc/../../x", "a/../../b"])
def test_paths_escaping_the_root_are_rejected(path: str) -> None:
    tree = _tree()
    with pytest.raises(SourceTreeError, match=r"escapes the image root"):
        tree.add(path, Node(mode=0o100644))
    assert set(tree.root.children) == {b"etc"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (b"a\0b", "NUL"),
        (b"x" * 256, "256 bytes"),
    ],
)
def test_bad_names(name: bytes, message: str) -> None:
    tree = _tree()
    with pytest.raises(SourceTreeError, match=message):
        tree.add(b"/etc/" + name, Node(mode=0o100644))
    assert tree.get("/etc").children == {}


def test_255_byte_name_is_fine() -> None:
    tree = _tree()
    tree.add(b"/" + b"n" * 255, Node(mode=0o100644))
    assert b"n" * 255 in tree.root.children


@pytest.mark.parametrize(
    ("target", "message"),
    [(b"", "0 bytes"), (b"t" * 4096, "4096 bytes"), (b"a\0b", "NUL")],
)
def test_bad_symlink_targets(target: bytes, message: str) -> None:
    tree = _tree()
    with pytest.raises(SourceTreeError, match=message):
        tree.add("/l", Node(mode=0o120777, target=target))
    assert b"l" not in tree.root.children


def test_errors_name_the_path_and_what_to_do() -> None:
    tree = _tree()
    with pytest.raises(SourceTreeError, match=r"^/nope/x: .*add the directory first|no such"):
        tree.add("/nope/x", Node(mode=0o100644))
    tree.add("/etc/f", Node(mode=0o100644))
    with pytest.raises(SourceTreeError, match=r"^/etc/f: duplicate entry"):
        tree.add("/etc/f", Node(mode=0o100644))
    with pytest.raises(SourceTreeError, match=r"parent is not a directory"):
        tree.add("/etc/f/g", Node(mode=0o100644))


def test_hardlinks() -> None:
    tree = _tree()
    f = tree.add("/etc/f", Node(mode=0o100644, nlink=2))
    tree.add_hardlink("/etc/g", "/etc/f")
    assert tree.get("/etc/g") is f
    assert isinstance(tree.get("/etc").children[b"g"], HardLink)
    with pytest.raises(SourceTreeError, match="hard link to directory"):
        tree.add_hardlink("/d", "/etc")
    with pytest.raises(SourceTreeError, match="no such entry"):
        tree.add_hardlink("/h", "/missing")
    assert [p for p, _ in tree.walk()] == [b"/", b"/etc", b"/etc/f"]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (Node(mode=0o100644, uid=2**32), "uid"),
        (Node(mode=0o100644, mtime_nsec=10**9), "mtime"),
        (Node(mode=0o100644, size=3, content=b"ab"), "inline content is 2 bytes"),
        (Node(mode=0o100644, xattrs={b"": b"v"}), "xattr name"),
        (Node(mode=0o100644, xattrs={b"user.a": b"v" * 65536}), "65535"),
        (Node(mode=0o100644, xattrs={b"user.a": b"v" * 32000, b"user.b": b"v" * 1000}), "32767"),
        (Node(mode=0o170644), "unknown file type"),
    ],
)
def test_node_limits(node: Node, message: str) -> None:
    tree = _tree()
    with pytest.raises(SourceTreeError, match=message):
        tree.add("/x", node)
    assert b"x" not in tree.root.children


def test_root_must_be_a_directory() -> None:
    with pytest.raises(SourceTreeError, match="must be a directory"):
        Tree(Node(mode=0o100644))


@pytest.mark.parametrize(
    ("path", "want"),
    [("/srv/root/etc/x", b"/etc/x"), ("etc/x", b"/etc/x"), ("/srv/root", b"/"), ("a/../b", b"/b")],
)
def test_tree_path_inside(path: str, want: bytes) -> None:
    assert tree_path(Path("/srv/root"), Path(path)) == want


@pytest.mark.parametrize("path", ["/srv/rootx/a", "/etc/passwd", "../x", "/srv/root/../y"])
def test_tree_path_outside_is_rejected(path: str) -> None:
    with pytest.raises(SourceTreeError, match="outside the image root /srv/root"):
        tree_path(Path("/srv/root"), Path(path))
