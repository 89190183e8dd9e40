"""Inode parsing and data access for the composefs/EROFS reader.

Follows the EROFS on-disk inode formats (``fs/erofs/erofs_fs.h``; COMPOSEFS.md
§8): compact (32 bytes) and extended (64 bytes) cores, datalayouts FLAT_PLAIN,
FLAT_INLINE and CHUNK_BASED. Compressed layouts are refused. Every location
is checked against the image end before it is read.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass
from typing import Final

from powernode.verity.composefs.erofs_layout import (
    BLOCK_SIZE,
    CHUNK_ADDR,
    CHUNK_FORMAT_BLKBITS_MASK,
    CHUNK_FORMAT_INDEXES,
    COMPACT_INODE,
    EXTENDED_INODE,
    FT_BLKDEV,
    FT_CHRDEV,
    FT_DIR,
    FT_FIFO,
    FT_REG_FILE,
    FT_SOCK,
    FT_SYMLINK,
    INODE_LAYOUT_BIT,
    INODE_LAYOUT_MASK,
    INODE_VERSION_EXTENDED,
    LAYOUT_CHUNK_BASED,
    LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN,
    NULL_ADDR,
    SYMLINK_MAX,
    XATTR_IBODY_HEADER,
    XATTR_SHARED_ID,
)
from powernode.verity.composefs.reader.super import Blob, Superblock

# i_format bit 4: a compact non-directory has nlink 1 (i_nb is reused), or a
# directory omits its "." dirent. Higher bits are not defined (EROFS_I_ALL).
_I_NLINK_1_BIT: Final = 0x10
_I_ALL: Final = 0x1F
# 8-byte chunk index: startblk_hi, device_id, startblk_lo
_CHUNK_INDEX: Final = struct.Struct("<HHI")
_NSEC_PER_SEC: Final = 1_000_000_000
_I_FORMAT: Final = struct.Struct("<H")

FTYPE_OF_MODE: Final[dict[int, int]] = {
    stat.S_IFREG: FT_REG_FILE,
    stat.S_IFDIR: FT_DIR,
    stat.S_IFCHR: FT_CHRDEV,
    stat.S_IFBLK: FT_BLKDEV,
    stat.S_IFIFO: FT_FIFO,
    stat.S_IFSOCK: FT_SOCK,
    stat.S_IFLNK: FT_SYMLINK,
}


@dataclass(frozen=True, slots=True)
class Inode:
    """One on-disk inode, validated; ``record_end`` is where its inline data ends."""

    nid: int
    offset: int
    extended: bool
    layout: int
    flags: int
    mode: int
    nlink: int
    size: int
    i_u: int
    uid: int
    gid: int
    mtime: int
    mtime_nsec: int
    xattr_size: int
    tail_offset: int  # inline tail or chunk map start
    tail_size: int  # bytes of inline tail (FLAT_INLINE) or chunk map
    full_blocks: int  # out-of-line blocks at i_u (FLAT layouts)

    @property
    def fmt(self) -> int:
        return stat.S_IFMT(self.mode)

    @property
    def xattr_offset(self) -> int:
        return self.offset + (EXTENDED_INODE.size if self.extended else COMPACT_INODE.size)

    @property
    def record_end(self) -> int:
        return self.tail_offset + self.tail_size

    @property
    def dot_omitted(self) -> bool:
        return self.fmt == stat.S_IFDIR and bool(self.flags & _I_NLINK_1_BIT)

    @property
    def chunk_bits(self) -> int:
        return BLOCK_SIZE.bit_length() - 1 + (self.i_u & CHUNK_FORMAT_BLKBITS_MASK)

    @property
    def chunk_indexes(self) -> bool:
        return bool(self.i_u & CHUNK_FORMAT_INDEXES)


def xattr_area_size(icount: int) -> int:
    """``erofs_xattr_ibody_size``: a 12-byte header, then icount-1 four-byte slots."""
    if icount == 0:
        return 0
    return XATTR_IBODY_HEADER.size + XATTR_SHARED_ID.size * (icount - 1)


def parse_inode(blob: Blob, sb: Superblock, nid: int) -> Inode:
    """Read and validate the inode at ``nid``; raises ImageFormatError."""
    off = sb.nid_offset(nid)
    what = f"inode nid {nid}"
    (i_format,) = blob.unpack(_I_FORMAT, off, what)
    if i_format & ~_I_ALL:
        raise blob.error(f"{what} at byte {off}: unknown i_format bits {i_format:#06x}")
    layout = (i_format >> INODE_LAYOUT_BIT) & INODE_LAYOUT_MASK
    if i_format & 1 == INODE_VERSION_EXTENDED:
        (_f, icount, mode, _nb, size, i_u, _ino, uid, gid, mtime, nsec, nlink) = blob.unpack(
            EXTENDED_INODE, off, what
        )
        core = EXTENDED_INODE.size
    else:
        (_f, icount, mode, nb, size, mtime_delta, i_u, _ino, uid, gid, _r) = blob.unpack(
            COMPACT_INODE, off, what
        )
        core = COMPACT_INODE.size
        # Compact inodes take the superblock's time; newer kernels add i_mtime
        # (offset 12) as seconds after it. composefs writes 0 there (§8.1).
        mtime, nsec = sb.build_time + mtime_delta, sb.build_time_nsec
        nlink = 1 if i_format & _I_NLINK_1_BIT and stat.S_IFMT(mode) != stat.S_IFDIR else nb
    if stat.S_IFMT(mode) not in FTYPE_OF_MODE:
        raise blob.error(f"{what} at byte {off}: unknown file type in mode {mode:#o}")
    if nsec >= _NSEC_PER_SEC:
        raise blob.error(f"{what} at byte {off}: mtime nanoseconds {nsec} are not below 10^9")
    xsize = xattr_area_size(icount)
    blob.check(off + core, xsize, f"{what}: xattr area")
    tail_off, tail, full = _locate(
        blob,
        f"{what} at byte {off}",
        mode=mode,
        layout=layout,
        size=size,
        i_u=i_u,
        tail_off=off + core + xsize,
    )
    return Inode(
        nid=nid,
        offset=off,
        extended=core == EXTENDED_INODE.size,
        layout=layout,
        flags=i_format,
        mode=mode,
        nlink=nlink,
        size=size,
        i_u=i_u,
        uid=uid,
        gid=gid,
        mtime=mtime,
        mtime_nsec=nsec,
        xattr_size=xsize,
        tail_offset=tail_off,
        tail_size=tail,
        full_blocks=full,
    )


def _locate(
    blob: Blob, what: str, *, mode: int, layout: int, size: int, i_u: int, tail_off: int
) -> tuple[int, int, int]:
    """Check the datalayout against the file type; (tail offset, tail size, full blocks)."""
    fmt = stat.S_IFMT(mode)
    if layout not in (LAYOUT_FLAT_PLAIN, LAYOUT_FLAT_INLINE, LAYOUT_CHUNK_BASED):
        kind = "compressed" if layout in (1, 3) else "unknown"
        raise blob.error(f"{what}: {kind} datalayout {layout} is not supported")
    if layout == LAYOUT_CHUNK_BASED:
        if fmt != stat.S_IFREG:
            raise blob.error(f"{what}: chunk-based layout on a non-regular file ({fmt:#o})")
        return _chunk_map(blob, what, size, i_u, tail_off)
    if fmt == stat.S_IFLNK and not 0 < size <= SYMLINK_MAX:
        raise blob.error(f"{what}: symlink target length {size} is not 1..{SYMLINK_MAX}")
    if fmt not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        return tail_off, 0, 0  # devices, fifos, sockets: no data, i_u is rdev
    nblocks = -(-size // BLOCK_SIZE)
    if layout == LAYOUT_FLAT_INLINE and nblocks > 0:
        full = nblocks - 1
        tail = size - full * BLOCK_SIZE
        # The kernel refuses inline data that crosses a block boundary.
        if tail_off % BLOCK_SIZE + tail > BLOCK_SIZE:
            raise blob.error(
                f"{what}: {tail} bytes of inline data at byte {tail_off} cross a block boundary"
            )
        blob.check(tail_off, tail, f"{what}: inline data")
    else:
        full, tail = nblocks, 0
    if full:
        blob.check(i_u * BLOCK_SIZE, full * BLOCK_SIZE, f"{what}: {full} data blocks")
    return tail_off, tail, full


def _chunk_map(blob: Blob, what: str, size: int, i_u: int, start: int) -> tuple[int, int, int]:
    """Locate the chunk map after the xattrs (COMPOSEFS.md §8.3, ``erofs_fs.h``)."""
    if i_u & ~(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES):
        raise blob.error(f"{what}: unsupported chunk format {i_u:#x}")
    chunk_bits = BLOCK_SIZE.bit_length() - 1 + (i_u & CHUNK_FORMAT_BLKBITS_MASK)
    count = -(-size // (1 << chunk_bits))
    esize = CHUNK_ADDR.size
    if i_u & CHUNK_FORMAT_INDEXES:  # the 8-byte index array is 8-byte aligned
        esize = _CHUNK_INDEX.size
        start = -(-start // esize) * esize
    blob.check(start, count * esize, f"{what}: chunk map of {count} entries")
    return start, count * esize, 0


def chunk_blocks(blob: Blob, ino: Inode) -> list[int | None]:
    """The start block of every chunk (None for a hole), each checked in range."""
    what = f"inode nid {ino.nid}"
    chunk = 1 << ino.chunk_bits
    out: list[int | None] = []
    for i, pos in enumerate(range(ino.tail_offset, ino.record_end, 8 if ino.chunk_indexes else 4)):
        if ino.chunk_indexes:
            hi, device, lo = blob.unpack(_CHUNK_INDEX, pos, what)
            if lo == NULL_ADDR:
                out.append(None)
                continue
            if hi or device:
                raise blob.error(
                    f"{what}: chunk {i} at byte {pos} uses device {device} / high block {hi}"
                )
            blk = lo
        else:
            (blk,) = blob.unpack(CHUNK_ADDR, pos, what)
            if blk == NULL_ADDR:
                out.append(None)
                continue
        length = min(chunk, ino.size - i * chunk)
        if blk * BLOCK_SIZE + length > blob.end:
            raise blob.error(
                f"{what}: chunk {i} at byte {pos} points at block {blk}, past the image end"
            )
        out.append(blk)
    return out


def flat_data(blob: Blob, ino: Inode) -> bytes:
    """The bytes of a FLAT_PLAIN / FLAT_INLINE inode: its blocks, then its tail."""
    what = f"inode nid {ino.nid}: data"
    if ino.size == 0:
        return b""
    if ino.layout == LAYOUT_FLAT_PLAIN:
        return blob.take(ino.i_u * BLOCK_SIZE, ino.size, what)
    head = (
        blob.take(ino.i_u * BLOCK_SIZE, ino.full_blocks * BLOCK_SIZE, what)
        if ino.full_blocks
        else b""
    )
    return head + blob.take(ino.tail_offset, ino.tail_size, what)
