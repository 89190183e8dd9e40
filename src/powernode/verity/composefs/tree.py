"""The in-memory tree a composefs image is written from.

A `Tree` is what mkcomposefs builds before it writes (shared/notes/COMPOSEFS.md
§5.1): nodes carrying lstat-like metadata, xattrs, and for regular files
either inline content (≤ 64 bytes in directory mode) or the fs-verity digest
and object name ("payload") of external content. Trees come from a directory
scan (`powernode.verity.composefs.scan.scan_tree`) or are assembled path by
path with `Tree.add` (the toolchain, dump files). Every entry point validates
the limits mkcomposefs enforces, so the writer can trust what it is given.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import SourceTreeError
from powernode.verity.composefs import erofs_layout as L

_MAX_EXTERNAL_SIZE = L.CHUNK_MAX_COUNT << L.CHUNK_MAX_BITS  # 2**53 (§15)
_INLINE_CONTENT_LIMIT = 5000  # dump mode's CONTENT limit (§5.1)
_U32 = 0xFFFFFFFF
_S64_MIN = -(1 << 63)
_S64_MAX = (1 << 63) - 1


@dataclass(eq=False)
class Node:
    """One inode of the tree; `mode` holds the type and permission bits of st_mode."""

    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0  # seconds since the epoch, may be negative
    mtime_nsec: int = 0
    size: int = 0  # regular files only; ignored for every other type
    rdev: int = 0  # block and character devices only
    nlink: int = 1  # non-directories; directory nlink is always recomputed
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    target: bytes | None = None  # symlink target
    content: bytes | None = None  # regular file stored inside the image
    digest: bytes | None = None  # fs-verity sha256 of external content
    payload: bytes | None = None  # backing object path, "hh/<62hex>"
    source: Path | None = None  # where external content can be read from
    children: dict[bytes, Node | HardLink] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)


@dataclass(frozen=True, eq=False)
class HardLink:
    """A directory entry naming an inode that has its primary entry elsewhere."""

    target: Node


def object_name(digest: bytes) -> bytes:
    """The store name of content with this fs-verity digest: ``hh/<62hex>`` (§5.1)."""
    h = digest.hex().encode()
    return h[:2] + b"/" + h[2:]


def is_whiteout(node: Node) -> bool:
    """An overlayfs whiteout: a character device with rdev 0 (§6.1 step 3)."""
    return stat.S_ISCHR(node.mode) and node.rdev == 0


def _err(where: str, message: str) -> SourceTreeError:
    return SourceTreeError(f"{where}: {message}")


def check_name(name: bytes, where: str) -> None:
    """Reject names mkcomposefs cannot store (§5.1, §15)."""
    if not name or name in (b".", b".."):
        raise _err(where, f"invalid file name {name!r}: must not be empty, '.' or '..'")
    if b"\0" in name or b"/" in name:
        raise _err(where, f"invalid file name {name!r}: contains NUL or '/'")
    if len(name) > L.NAME_MAX:
        raise _err(
            where, f"file name is {len(name)} bytes; EROFS allows at most {L.NAME_MAX}; rename it"
        )


def check_node(node: Node, where: str) -> None:
    """Validate one node's metadata against the format's limits."""
    if stat.S_IFMT(node.mode) not in (
        stat.S_IFREG,
        stat.S_IFDIR,
        stat.S_IFLNK,
        stat.S_IFCHR,
        stat.S_IFBLK,
        stat.S_IFIFO,
        stat.S_IFSOCK,
    ):
        raise _err(where, f"unknown file type in mode {node.mode:#o}")
    if node.mode >> 16:
        raise _err(where, f"mode {node.mode:#o} does not fit in 16 bits")
    for label, value in (("uid", node.uid), ("gid", node.gid), ("nlink", node.nlink)):
        if not 0 <= value <= _U32:
            raise _err(where, f"{label} {value} is outside 0..{_U32}")
    if not _S64_MIN <= node.mtime <= _S64_MAX or not 0 <= node.mtime_nsec < 1_000_000_000:
        raise _err(where, f"mtime {node.mtime}.{node.mtime_nsec:09d} is out of range")
    if stat.S_ISLNK(node.mode):
        if not node.target or len(node.target) > L.SYMLINK_MAX:
            n = len(node.target or b"")
            raise _err(where, f"symlink target is {n} bytes; it must be 1..{L.SYMLINK_MAX}")
        if b"\0" in node.target:
            raise _err(where, "symlink target contains a NUL byte")
    if node.is_reg:
        _check_regular(node, where)
    _check_xattrs(node.xattrs, where)


def _check_regular(node: Node, where: str) -> None:
    if node.size < 0:
        raise _err(where, f"negative size {node.size}")
    if node.content is not None:
        if len(node.content) != node.size:
            raise _err(where, f"inline content is {len(node.content)} bytes, size {node.size}")
        if node.size > _INLINE_CONTENT_LIMIT:
            raise _err(where, f"inline content over {_INLINE_CONTENT_LIMIT} bytes")
    elif node.size > _MAX_EXTERNAL_SIZE:
        raise _err(where, f"file is {node.size} bytes; composefs allows at most 2**53")
    if node.digest is not None and len(node.digest) != 32:
        raise _err(where, "fs-verity digest must be 32 bytes (sha256)")


def _check_xattrs(xattrs: dict[bytes, bytes], where: str) -> None:
    budget = 12
    for name, value in xattrs.items():
        if not 0 < len(name) <= L.XATTR_NAME_MAX or b"\0" in name:
            raise _err(where, f"xattr name {name[:40]!r}… must be 1..255 bytes without NUL")
        if len(value) > L.XATTR_VALUE_MAX:
            raise _err(where, f"xattr {name.decode(errors='replace')} value over 65535 bytes")
        budget += 7 + len(name) + len(value)
    if budget > L.XATTR_INODE_BUDGET:
        raise _err(
            where,
            f"xattrs need {budget} bytes; mkcomposefs allows {L.XATTR_INODE_BUDGET} per inode",
        )


def split_path(path: str | bytes) -> list[bytes]:
    """Components of a path inside the tree; ``..`` that leaves the root is an error."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    parts: list[bytes] = []
    for comp in raw.split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if not parts:
                raise _err(raw.decode(errors="replace"), "path escapes the image root through '..'")
            parts.pop()
            continue
        check_name(comp, raw.decode(errors="replace"))
        parts.append(comp)
    return parts


def tree_path(root: Path, path: Path) -> bytes:
    """``path`` (absolute, or relative to ``root``) as a tree path; outside ``root`` is an error.

    Lexical only (like ``os.path.normpath``): for file lists whose entries name
    host paths under the source root.
    """
    base = os.path.normpath(os.fsencode(root))
    full = os.path.normpath(os.path.join(base, os.fsencode(path)))
    if full != base and not full.startswith(base.rstrip(b"/") + b"/"):
        raise _err(os.fsdecode(path), f"path is outside the image root {root}")
    return b"/" + full[len(base) :].lstrip(b"/")


class Tree:
    """A rooted tree of nodes; children are kept by name and written in bytewise order."""

    def __init__(self, root: Node) -> None:
        if not root.is_dir:
            raise _err("/", "the root of an image must be a directory")
        check_node(root, "/")
        self.root = root

    def get(self, path: str | bytes) -> Node:
        """The node at ``path`` (hard links resolved); SourceTreeError if absent."""
        node = self.root
        for comp in split_path(path):
            child = node.children.get(comp) if node.is_dir else None
            if child is None:
                raise _err(_show(path), "no such entry in the tree")
            node = child.target if isinstance(child, HardLink) else child
        return node

    def _parent(self, path: str | bytes) -> tuple[Node, bytes]:
        parts = split_path(path)
        if not parts:
            raise _err(_show(path), "the root already exists")
        parent = self.get(b"/".join(parts[:-1]))
        if not parent.is_dir:
            raise _err(_show(path), "parent is not a directory; add the directory first")
        if parts[-1] in parent.children:
            raise _err(_show(path), "duplicate entry")
        return parent, parts[-1]

    def add(self, path: str | bytes, node: Node) -> Node:
        """Add ``node`` at ``path``; the parent directory must already be in the tree."""
        check_node(node, _show(path))
        if node.is_dir and node.children:
            raise _err(_show(path), "add a directory empty, then its entries")
        parent, name = self._parent(path)
        parent.children[name] = node
        return node

    def add_hardlink(self, path: str | bytes, target: str | bytes) -> None:
        """Make ``path`` another name of the non-directory at ``target`` (dump-file hard links)."""
        node = self.get(target)
        if node.is_dir:
            raise _err(_show(path), f"hard link to directory {_show(target)} is not allowed")
        parent, name = self._parent(path)
        parent.children[name] = HardLink(node)

    def walk(self) -> Iterator[tuple[bytes, Node]]:
        """Every primary (non-hard-link) node, preorder, children in name order."""
        stack: list[tuple[bytes, Node]] = [(b"/", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.is_dir:
                base = path.rstrip(b"/")
                for name in sorted(node.children, reverse=True):
                    child = node.children[name]
                    if not isinstance(child, HardLink):
                        stack.append((base + b"/" + name, child))


def _show(path: str | bytes) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else path
