"""Selected entries → the composefs ``Tree`` the artifact's image is written from.

Only the entries a module ships are read; every regular file is hashed once
for both digests the artifact needs: the fs-verity sha256 that names its
object (shared/notes/COMPOSEFS.md §5.1) and the plain SHA-256 the CycloneDX
SBOM lists (CycloneDX 1.5 ``hashes``: fs-verity is not one of its algorithms).
Files of 64 bytes or less are stored inside the image, as mkcomposefs does.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from powernode.errors import SourceTreeError
from powernode.toolchain.build.entries import Entry
from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.tree import Node, Tree, object_name
from powernode.verity.fsverity import FsVerityHasher

_CHUNK = 1 << 20
# Package files keep their capabilities (ping's cap_net_raw); any other xattr in the
# package tree is the build host's (SELinux labels) and would make builds differ.
KEPT_XATTRS = frozenset({b"security.capability"})


@dataclass(frozen=True)
class FileContent:
    """A regular file's content as the image records it."""

    sha256: str  # plain SHA-256, hex (for the SBOM)
    inline: bytes | None  # the bytes themselves when small enough to live in the image
    verity: bytes | None  # fs-verity sha256 of external content
    source: Path | None  # a host file holding the content (copied into objects/)


ContentReader = Callable[[Entry], FileContent]


@dataclass(frozen=True)
class ShippedFile:
    """One shipped path for file-list.txt and the SBOM."""

    path: str
    kind: str  # "file", "dir", "symlink", "other"
    sha256: str | None
    size: int


def hash_stream(stream: IO[bytes], size: int, where: str, sink: IO[bytes] | None) -> FileContent:
    """Hash ``size`` bytes of ``stream`` (copying them to ``sink``); short or long is an error."""
    plain = hashlib.sha256()
    verity = FsVerityHasher()
    inline = size <= L.INLINE_CONTENT_MAX
    parts: list[bytes] = []
    done = 0
    while True:
        try:
            buf = stream.read(_CHUNK)
        except OSError as e:
            raise SourceTreeError(f"{where}: cannot read file: {e.strerror}") from e
        if not buf:
            break
        done += len(buf)
        if done > size:
            break
        plain.update(buf)
        if inline:
            parts.append(buf)
        else:
            verity.update(buf)
            if sink is not None:
                sink.write(buf)
    if done != size:
        raise SourceTreeError(
            f"{where}: file changed while it was read (expected {size} bytes, read {done}); "
            "stop writers to the source tree and build again"
        )
    if inline:
        return FileContent(plain.hexdigest(), b"".join(parts), None, None)
    return FileContent(plain.hexdigest(), None, verity.digest(), None)


def read_host_file(entry: Entry) -> FileContent:
    """Content of a rootfs/ file, opened without following links (it was lstat'ed as a file)."""
    try:
        # O_NOFOLLOW: a symlink swapped in since the walk must fail, not be followed out of
        # the tree; O_NONBLOCK: a fifo swapped in must not block the open
        fd = os.open(entry.where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        hint = "; run the build as a user that can read it" if e.errno == errno.EACCES else ""
        raise SourceTreeError(f"{entry.where}: cannot read file: {e.strerror}{hint}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SourceTreeError(f"{entry.where}: changed type while the build read it")
        content = hash_stream(f, entry.size, entry.where, None)
    if content.inline is None:
        return FileContent(content.sha256, None, content.verity, Path(entry.where))
    return content


def _check_policy(entry: Entry, *, allow_devices: bool, allow_setuid: bool) -> None:
    mode = entry.mode
    if stat.S_ISBLK(mode) or (stat.S_ISCHR(mode) and entry.rdev != 0):
        if not allow_devices:
            raise SourceTreeError(
                f"{entry.where}: {entry.path} is a device node; set allow.devices: true in "
                "the module manifest to ship device nodes, or leave it out with mask"
            )
    elif stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID) and not allow_setuid:
        raise SourceTreeError(
            f"{entry.where}: {entry.path} is setuid/setgid (mode {stat.S_IMODE(mode):04o}); "
            "set allow.setuid: true in the module manifest, or clear the bit"
        )


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "symlink" if stat.S_ISLNK(mode) else "other"


def make_tree(
    entries: Iterable[Entry],
    read: Callable[[Entry], FileContent],
    *,
    allow_devices: bool,
    allow_setuid: bool,
) -> tuple[Tree, list[ShippedFile]]:
    """The tree of ``entries`` (sorted by path, parents first, "/" first)."""
    tree: Tree | None = None
    shipped: list[ShippedFile] = []
    for e in entries:
        _check_policy(e, allow_devices=allow_devices, allow_setuid=allow_setuid)
        node = Node(mode=e.mode, uid=e.uid, gid=e.gid, mtime=e.mtime)
        node.xattrs = {k: v for k, v in e.xattrs if k in KEPT_XATTRS}
        sha: str | None = None
        if stat.S_ISREG(e.mode):
            node.size = e.size
            if e.size:
                content = read(e)
                sha = content.sha256
                if content.inline is not None:
                    node.content = content.inline
                else:
                    assert content.verity is not None
                    node.digest = content.verity
                    node.payload = object_name(content.verity)
                    node.source = content.source
            else:
                sha = hashlib.sha256(b"").hexdigest()
        elif stat.S_ISLNK(e.mode):
            node.target = e.target
        elif stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode):
            node.rdev = e.rdev
        if e.path == "/":
            tree = Tree(node)
            continue
        if tree is None:
            tree = Tree(Node(mode=stat.S_IFDIR | 0o755, mtime=e.mtime))
        tree.add(e.path.encode("utf-8", "surrogateescape"), node)
        shipped.append(ShippedFile(e.path, _kind(e.mode), sha, node.size))
    if tree is None:
        raise SourceTreeError("nothing to build: the tree is empty")
    return tree, shipped
