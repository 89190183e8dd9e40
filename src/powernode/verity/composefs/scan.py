"""Directory scan: turn a source directory into a `Tree`, as mkcomposefs does.

Follows shared/notes/COMPOSEFS.md §5.1 (directory mode): lstat only, symlinks
never followed, every xattr name from listxattr read verbatim, nlink not
read (so hard links are NOT detected: each path becomes its own inode, like
mkcomposefs), files of 64 bytes or less stored inline, larger files named
by the fs-verity SHA-256 digest of their content.

On top of mkcomposefs, the scan enforces powernode's policy (devices and
setuid/setgid files only when the module manifest allows them), and makes
builds reproducible: `source_date_epoch` clamps newer mtimes, `use_epoch`
zeroes them. A file that changes while it is read is an error, not a silent
mismatch between the image and the object store.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from powernode.errors import SourceTreeError
from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.tree import Node, Tree, check_name, check_node, object_name
from powernode.verity.fsverity import FsVerityHasher

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20
ReadHook = Callable[[Path, int], None]


@dataclass(frozen=True)
class TreePolicy:
    """What a scan accepts and how it normalises metadata.

    ``allow_devices`` / ``allow_setuid`` mirror the manifest fields
    ``allow.devices`` / ``allow.setuid``. Whiteouts (character devices 0:0)
    are always accepted: they are how a module deletes lower-layer files and
    the writer turns them into regular files (§6.1).
    """

    allow_devices: bool = False
    allow_setuid: bool = False
    source_date_epoch: int | None = None  # clamp every newer mtime to this
    use_epoch: bool = False  # every mtime becomes 0 (mkcomposefs --use-epoch)
    xattrs: Literal["all", "user", "none"] = "all"  # mkcomposefs --user-xattrs / --skip-xattrs
    max_entries: int = 5_000_000  # bound on untrusted trees


def _fail(path: Path | bytes, message: str) -> SourceTreeError:
    shown = os.fsdecode(path)
    return SourceTreeError(f"{shown}: {message}")


def scan_tree(src: Path, *, policy: TreePolicy, read_hook: ReadHook | None = None) -> Tree:
    """Scan ``src`` into a Tree; raises SourceTreeError naming the offending path.

    ``read_hook(path, bytes_read)`` is called after every chunk read from a
    regular file (a test seam for files that change while they are read).
    """
    try:
        st = os.stat(src)  # SRC itself may be a symlink to a directory
    except FileNotFoundError as e:
        raise _fail(src, "source directory does not exist") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _fail(src, "source path is a symlink loop") from e
        raise _fail(src, f"cannot stat source directory: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise _fail(src, "source is not a directory")
    scanner = _Scanner(policy, read_hook)
    root = scanner.node(os.fsencode(src), st)
    tree = Tree(root)
    stack: list[tuple[bytes, Node]] = [(os.fsencode(src), root)]
    while stack:
        dirpath, dirnode = stack.pop()
        for name, child_path, child_st in scanner.entries(dirpath):
            child = scanner.node(child_path, child_st)
            dirnode.children[name] = child
            if child.is_dir:
                stack.append((child_path, child))
    log.debug("scanned %s: %d entries", src, scanner.count)
    return tree


class _Scanner:
    def __init__(self, policy: TreePolicy, read_hook: ReadHook | None) -> None:
        self.policy = policy
        self.read_hook = read_hook
        self.count = 0

    def entries(self, dirpath: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
        try:
            with os.scandir(dirpath) as it:
                found = [(e.name, e.path, e.stat(follow_symlinks=False)) for e in it]
        except OSError as e:
            raise _fail(dirpath, f"cannot read directory: {e.strerror}") from e
        self.count += len(found)
        if self.count > self.policy.max_entries:
            raise _fail(dirpath, f"tree has more than {self.policy.max_entries} entries")
        for name, path, _ in found:
            check_name(name, os.fsdecode(path))
        found.sort(key=lambda t: t[0])
        return found

    def node(self, path: bytes, st: os.stat_result) -> Node:
        mode = st.st_mode
        sec, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
        if self.policy.use_epoch:
            sec, nsec = 0, 0
        elif self.policy.source_date_epoch is not None and (sec, nsec) > (
            self.policy.source_date_epoch,
            0,
        ):
            sec, nsec = self.policy.source_date_epoch, 0
        node = Node(mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=sec, mtime_nsec=nsec)
        if stat.S_ISBLK(mode) or (stat.S_ISCHR(mode) and st.st_rdev != 0):
            if not self.policy.allow_devices:
                raise _fail(
                    path,
                    "is a device node; set allow.devices: true in the module manifest "
                    "to include device nodes",
                )
            node.rdev = st.st_rdev
        elif stat.S_ISREG(mode):
            if mode & (stat.S_ISUID | stat.S_ISGID) and not self.policy.allow_setuid:
                raise _fail(
                    path,
                    f"is setuid/setgid (mode {stat.S_IMODE(mode):04o}); set allow.setuid: true "
                    "in the module manifest or clear the bit",
                )
            self._content(path, st, node)
        elif stat.S_ISLNK(mode):
            try:
                node.target = os.readlink(path)
            except OSError as e:
                raise _fail(path, f"cannot read symlink: {e.strerror}") from e
        node.xattrs = self._xattrs(path)
        check_node(node, os.fsdecode(path))
        return node

    def _xattrs(self, path: bytes) -> dict[bytes, bytes]:
        if self.policy.xattrs == "none":
            return {}
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return {}
            raise _fail(path, f"cannot list xattrs: {e.strerror}") from e
        out: dict[bytes, bytes] = {}
        for name in names:
            if self.policy.xattrs == "user" and not name.startswith("user."):
                continue
            try:
                out[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
            except OSError as e:
                if e.errno == errno.ENODATA:  # removed between list and get
                    continue
                raise _fail(path, f"cannot read xattr {name}: {e.strerror}") from e
        return out

    def _content(self, path: bytes, st: os.stat_result, node: Node) -> None:
        node.size = st.st_size
        if st.st_size == 0:
            return
        try:
            # O_NONBLOCK: a fifo swapped in since the lstat must fail the fstat check below,
            # not block the open (regular files ignore the flag)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            raise _fail(
                path, f"cannot read file: {e.strerror}; run the build as a user that can read it"
            ) from e
        try:
            before = os.fstat(fd)
            if (before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns) != (
                st.st_ino,
                st.st_dev,
                st.st_size,
                st.st_mtime_ns,
            ):
                raise _changed(path)
            inline = st.st_size <= L.INLINE_CONTENT_MAX
            hasher = FsVerityHasher()
            parts: list[bytes] = []
            done = 0
            while True:
                try:
                    buf = os.read(fd, _READ_CHUNK)
                except OSError as e:
                    raise _fail(path, f"cannot read file: {e.strerror}") from e
                if not buf:
                    break
                done += len(buf)
                if inline:
                    parts.append(buf)
                else:
                    hasher.update(buf)
                if self.read_hook is not None:
                    self.read_hook(Path(os.fsdecode(path)), done)
                if done > st.st_size:
                    raise _changed(path)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if done != st.st_size or (after.st_size, after.st_mtime_ns, after.st_ino) != (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        ):
            raise _changed(path)
        if inline:
            node.content = b"".join(parts)
        else:
            node.digest = hasher.digest()
            node.payload = object_name(node.digest)
            node.source = Path(os.fsdecode(path))


def _changed(path: bytes) -> SourceTreeError:
    return _fail(
        path,
        "file changed while it was read (size, mtime or inode differ before and after); "
        "stop writers to the source tree and build again",
    )
