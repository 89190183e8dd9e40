"""Read composefs images (and plain EROFS images) without trusting them.

``open_image(path)`` / ``Image.from_bytes(data)`` parse the composefs header
(absent from plain ``mkfs.erofs`` images) and the EROFS superblock;
``Image.walk()`` lists every path in preorder, children in name order. The
format is the one shared/notes/COMPOSEFS.md describes and the Linux EROFS
on-disk format (``fs/erofs/erofs_fs.h``).

The image is untrusted. Every offset is bounds-checked; a walk visits each
directory once (a dirent that leads back to a directory already listed is a
loop), and inode records and directory blocks may not overlap one another,
so the work of a walk grows with the image size, not faster. Limits
(``ReaderLimits``) bound depth, entry count and xattrs. Every problem raises
``ImageFormatError`` naming the byte offset or nid.

By default composefs internals are hidden as ``composefs-info`` hides them
(§6.1): the 256 root whiteout stubs, the overlay xattrs that carry the
payload, digest and whiteout markers, and the ``trusted.overlay.overlay.``
escaping. ``raw=True`` shows the image as the kernel sees it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from powernode.errors import ImageFormatError
from powernode.verity.composefs.erofs_layout import (
    BLOCK_SIZE,
    LAYOUT_CHUNK_BASED,
    ROOT_STUB_COUNT,
    SLOT_SIZE,
    SUPERBLOCK_OFFSET,
)
from powernode.verity.composefs.reader.dir import DOT, DOTDOT, Dirent, parse_dirents
from powernode.verity.composefs.reader.inode import (
    FTYPE_OF_MODE,
    Inode,
    chunk_blocks,
    flat_data,
    parse_inode,
)
from powernode.verity.composefs.reader.super import (
    HINT,
    Blob,
    Header,
    ReaderLimits,
    Superblock,
    parse_header,
    parse_superblock,
)
from powernode.verity.composefs.reader.xattr import (
    composefs_info_xattrs,
    interpret,
    read_xattr_entries,
    read_xattrs,
)

__all__ = ["Entry", "EntryType", "Image", "ReaderLimits", "open_image"]

log = logging.getLogger(__name__)

_STUB_NAMES: Final = frozenset(f"{i:02x}".encode() for i in range(ROOT_STUB_COUNT))


class EntryType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    SOCKET = "socket"


_TYPE_OF_FMT: Final = {
    stat.S_IFREG: EntryType.FILE,
    stat.S_IFDIR: EntryType.DIR,
    stat.S_IFLNK: EntryType.SYMLINK,
    stat.S_IFCHR: EntryType.CHAR,
    stat.S_IFBLK: EntryType.BLOCK,
    stat.S_IFIFO: EntryType.FIFO,
    stat.S_IFSOCK: EntryType.SOCKET,
}


@dataclass(frozen=True)
class Entry:
    """One path of an image, with the metadata of its inode."""

    path: bytes  # absolute, b"/" for the root
    nid: int
    type: EntryType
    mode: int  # st_mode: type and permission bits
    uid: int
    gid: int
    size: int
    mtime: tuple[int, int]  # (seconds, nanoseconds)
    nlink: int
    rdev: int  # Linux dev_t encoding, 0 unless a device
    symlink: bytes | None  # target of a symlink
    xattrs: dict[bytes, bytes] = field(compare=False)
    payload: bytes | None  # backing path (redirect) of an external file
    digest: bytes | None  # fs-verity digest from the metacopy xattr
    inline: bool  # a regular file whose content is stored in the image
    hardlink_to: bytes | None = None  # earlier path of the same inode in this walk

    @property
    def path_str(self) -> str:
        return os.fsdecode(self.path)

    @property
    def object(self) -> str | None:
        """The backing object name (``payload`` as text), if the file has one."""
        return None if self.payload is None else os.fsdecode(self.payload)


class Image:
    """A parsed composefs/EROFS image; construct with ``from_bytes`` or ``open_image``."""

    def __init__(self, blob: Blob, header: Header | None, sb: Superblock, limits: ReaderLimits,
                 *, raw: bool) -> None:  # fmt: skip
        self._blob = blob
        self.header = header
        self.superblock = sb
        self.limits = limits
        self.raw = raw
        root = parse_inode(blob, sb, sb.root_nid)
        if root.fmt != stat.S_IFDIR:
            raise blob.error(f"root nid {sb.root_nid} is not a directory (mode {root.mode:#o})")
        self._root = root

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        limits: ReaderLimits | None = None,
        raw: bool = False,
        source: str = "<image>",
    ) -> Image:
        """Parse ``data``; raises ImageFormatError if it is not a valid image."""
        header = parse_header(data, source)
        sb = parse_superblock(data, source)
        blob = Blob(data, source, sb.blocks * BLOCK_SIZE)
        return cls(blob, header, sb, limits or ReaderLimits(), raw=raw)

    @property
    def is_composefs(self) -> bool:
        return self.header is not None

    @property
    def size(self) -> int:
        return self._blob.end

    @property
    def _cooked(self) -> bool:
        return self.header is not None and not self.raw

    def walk(self) -> Iterator[Entry]:
        """Every path, root first, preorder, children in on-disk (name) order."""
        return _Walk(self).run()

    def entries(self) -> list[Entry]:
        """The whole walk as a list: fails before returning anything if the image is bad."""
        return list(self.walk())

    def objects(self) -> set[str]:
        """Backing object names (``xx/62hex``) of external files (``composefs-info objects``)."""
        return {e.object for e in self.walk() if e.type is EntryType.FILE and e.object}

    def lookup(self, path: str | bytes) -> Entry:
        """The entry at ``path`` (symlinks are not followed); FileNotFoundError if absent."""
        want = os.fsencode(path)
        parts = [p for p in want.split(b"/") if p]
        ino, at = self._root, b"/"
        for depth, name in enumerate(parts):
            if ino.fmt != stat.S_IFDIR or name in (DOT, DOTDOT) or depth >= self.limits.max_depth:
                raise FileNotFoundError(f"{self._blob.source}: no {os.fsdecode(want)!r} in image")
            found = [d for d in self._dirents(ino) if d.name == name]
            if not found:
                raise FileNotFoundError(f"{self._blob.source}: no {os.fsdecode(want)!r} in image")
            child = parse_inode(self._blob, self.superblock, found[0].nid)
            if at == b"/" and self._hidden_stub(name, child):
                raise FileNotFoundError(f"{self._blob.source}: no {os.fsdecode(want)!r} in image")
            ino, at = child, _join(at, name)
        return self._entry(at, ino)

    def info_xattrs(self, entry: Entry) -> list[tuple[bytes, bytes]]:
        """``entry``'s xattrs as ``composefs-info dump`` prints them (its order, its
        markers); ``entry.xattrs`` is the tree mkcomposefs was given instead."""
        ino = parse_inode(self._blob, self.superblock, entry.nid)
        entries = read_xattr_entries(self._blob, self.superblock, ino, self.limits)
        if not self._cooked:
            return sorted(entries)
        return composefs_info_xattrs(entries, ino.mode)

    def read_inline(self, entry: Entry) -> bytes:
        """The content of a regular file stored in the image (``entry.inline``)."""
        if entry.type is not EntryType.FILE or not (entry.inline or entry.size == 0):
            raise ValueError(f"{entry.path_str}: content is not stored in the image")
        ino = parse_inode(self._blob, self.superblock, entry.nid)
        if ino.size > self.limits.max_read_bytes:
            raise self._blob.error(
                f"nid {ino.nid}: {ino.size} bytes of content exceed the read limit "
                f"{self.limits.max_read_bytes}"
            )
        if ino.layout != LAYOUT_CHUNK_BASED:
            return flat_data(self._blob, ino)
        chunk = 1 << ino.chunk_bits
        parts = []
        for i, blk in enumerate(chunk_blocks(self._blob, ino)):
            length = min(chunk, ino.size - i * chunk)
            if blk is None:
                parts.append(bytes(length))
            else:
                parts.append(self._blob.take(blk * BLOCK_SIZE, length, f"nid {ino.nid} chunk {i}"))
        return b"".join(parts)

    # --- internals shared with _Walk ---------------------------------------------------

    def _dirents(self, ino: Inode) -> list[Dirent]:
        return parse_dirents(self._blob, flat_data(self._blob, ino), ino.nid)

    def _hidden_stub(self, name: bytes, ino: Inode) -> bool:
        """A root whiteout stub 00..ff that composefs adds (§6.1 step 6)."""
        return self._cooked and name in _STUB_NAMES and ino.fmt == stat.S_IFCHR and ino.i_u == 0

    def _entry(self, path: bytes, ino: Inode, hardlink_to: bytes | None = None) -> Entry:
        raw = read_xattrs(self._blob, self.superblock, ino, self.limits)
        ov = interpret(raw, ino.mode, cooked=self._cooked)
        fmt, mode, size = ino.fmt, ino.mode, ino.size
        symlink = None
        if fmt == stat.S_IFLNK:
            symlink = flat_data(self._blob, ino)
            if b"\0" in symlink:
                raise self._blob.error(f"symlink nid {ino.nid} ({path!r}): NUL in its target")
        if ov.whiteout:  # composefs stores whiteouts as regular files (§6.1 step 3)
            fmt, mode, size = stat.S_IFCHR, stat.S_IFCHR | stat.S_IMODE(mode), 0
        is_dev = fmt in (stat.S_IFCHR, stat.S_IFBLK)
        is_reg = fmt == stat.S_IFREG
        return Entry(
            path=path,
            nid=ino.nid,
            type=_TYPE_OF_FMT[fmt],
            mode=mode,
            uid=ino.uid,
            gid=ino.gid,
            size=size,
            mtime=(ino.mtime, ino.mtime_nsec),
            nlink=ino.nlink,
            rdev=ino.i_u if is_dev and not ov.whiteout else 0,
            symlink=symlink,
            xattrs=ov.xattrs,
            payload=ov.payload,
            digest=ov.digest,
            inline=is_reg and size > 0 and not ov.metacopy,
            hardlink_to=hardlink_to,
        )


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent == b"/" else parent + b"/" + name


@dataclass
class _Frame:
    nid: int
    path: bytes
    children: Iterator[Dirent]


class _Walk:
    """One traversal; tracks what has been visited so corrupt images cannot loop."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.blob = image._blob
        self.sb = image.superblock
        self.limits = image.limits
        end = self.blob.end
        # Occupancy maps: one byte per 32-byte inode slot and per data block.
        self.slots = bytearray(-(-end // SLOT_SIZE))
        self.blocks = bytearray(end // BLOCK_SIZE)
        self._mark(
            self.slots, SUPERBLOCK_OFFSET // SLOT_SIZE, (SUPERBLOCK_OFFSET + 128) // SLOT_SIZE
        )
        self.blocks[0] = 1  # block 0 holds the header and superblock
        self.inodes: dict[int, Inode] = {}
        self.first: dict[int, Entry] = {}
        self.count = 0

    @staticmethod
    def _mark(bitmap: bytearray, start: int, stop: int) -> bool:
        """Mark [start, stop); False if any of it was already marked."""
        if bitmap.find(1, start, stop) != -1:
            return False
        bitmap[start:stop] = b"\x01" * (stop - start)
        return True

    def _inode(self, nid: int, path: bytes) -> Inode:
        known = self.inodes.get(nid)
        if known is not None:
            return known
        ino = parse_inode(self.blob, self.sb, nid)
        first, stop = ino.offset // SLOT_SIZE, -(-ino.record_end // SLOT_SIZE)
        if not self._mark(self.slots, first, stop):
            raise self.blob.error(
                f"inode nid {nid} ({path!r}) at bytes {ino.offset}..{ino.record_end} "
                "overlaps another inode or the superblock"
            )
        # Only directory and symlink blocks are read by a walk; sharing is never valid.
        stop = ino.i_u + ino.full_blocks
        has_blocks = ino.fmt in (stat.S_IFDIR, stat.S_IFLNK) and ino.full_blocks > 0
        if has_blocks and not self._mark(self.blocks, ino.i_u, stop):
            raise self.blob.error(
                f"inode nid {nid} ({path!r}): data blocks {ino.i_u}..{stop}"
                " overlap another directory's or symlink's blocks"
            )
        if ino.layout == LAYOUT_CHUNK_BASED:
            chunk_blocks(self.blob, ino)  # every chunk address must lie inside the image
        self.inodes[nid] = ino
        return ino

    def _children(self, ino: Inode, path: bytes, parent: int) -> Iterator[Dirent]:
        dirents = self.image._dirents(ino)
        for d in dirents:
            if d.name == DOT and d.nid != ino.nid:
                raise self.blob.error(
                    f"directory nid {ino.nid} ({path!r}): '.' points at nid {d.nid}"
                )
            if d.name == DOTDOT and d.nid != parent:
                raise self.blob.error(
                    f"directory nid {ino.nid} ({path!r}): '..' points at nid {d.nid}, "
                    f"not its parent {parent}"
                )
        return iter([d for d in dirents if d.name not in (DOT, DOTDOT)])

    def run(self) -> Iterator[Entry]:
        root = self._inode(self.sb.root_nid, b"/")
        yield self.image._entry(b"/", root)
        stack = [_Frame(root.nid, b"/", self._children(root, b"/", root.nid))]
        dirs = {root.nid: b"/"}
        while stack:
            frame = stack[-1]
            d = next(frame.children, None)
            if d is None:
                stack.pop()
                continue
            path = _join(frame.path, d.name)
            self.count += 1
            if self.count > self.limits.max_entries:
                raise self.blob.error(f"more than {self.limits.max_entries} entries (at {path!r})")
            ino = self._inode(d.nid, path)
            if FTYPE_OF_MODE[ino.fmt] != d.file_type:
                raise self.blob.error(
                    f"dirent {path!r} says file type {d.file_type}, but nid {d.nid} has "
                    f"mode {ino.mode:#o}"
                )
            if frame.path == b"/" and self.image._hidden_stub(d.name, ino):
                continue
            if ino.fmt == stat.S_IFDIR:
                if d.nid in dirs:
                    raise self.blob.error(
                        f"directory loop: {path!r} points at nid {d.nid}, the directory "
                        f"already listed as {dirs[d.nid]!r}"
                    )
                if len(stack) > self.limits.max_depth:
                    raise self.blob.error(f"{path!r} is nested deeper than {self.limits.max_depth}")
                dirs[d.nid] = path
                yield self.image._entry(path, ino)
                stack.append(_Frame(d.nid, path, self._children(ino, path, frame.nid)))
                continue
            first = self.first.get(d.nid)
            if first is None:
                first = self.first[d.nid] = self.image._entry(path, ino)
                yield first
            else:  # a hard link: same inode, parsed once
                yield replace(first, path=path, hardlink_to=first.path)


def open_image(
    source: str | os.PathLike[str] | bytes,
    *,
    limits: ReaderLimits | None = None,
    raw: bool = False,
) -> Image:
    """Open an image from a path or from its bytes; raises ImageFormatError or OSError."""
    limits = limits or ReaderLimits()
    if isinstance(source, bytes):
        return Image.from_bytes(source, limits=limits, raw=raw)
    path = Path(source)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limits.max_image_bytes:
            raise ImageFormatError(
                f"{path}: {size} bytes exceed the limit of {limits.max_image_bytes} ({HINT})"
            )
        data = f.read(limits.max_image_bytes + 1)
    log.debug("read %d bytes of image %s", len(data), path)
    return Image.from_bytes(data, limits=limits, raw=raw, source=str(path))
