"""Bounds-checked access to image bytes, reader limits, header and superblock.

Part of the composefs/EROFS reader (see ``reader.py``). The image is untrusted
input: every offset and length read from it is checked against the image end
before use, and every problem becomes an ``ImageFormatError`` naming the byte
offset. Formats: shared/notes/COMPOSEFS.md §3-§4 and the Linux EROFS on-disk
format (``fs/erofs/erofs_fs.h``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

from powernode.errors import ImageFormatError
from powernode.verity.composefs.erofs_layout import (
    BLOCK_SIZE,
    BLOCK_SIZE_BITS,
    COMPOSEFS_HEADER,
    COMPOSEFS_HEADER_VERSION,
    COMPOSEFS_MAGIC,
    COMPOSEFS_MAX_FORMAT_VERSION,
    EROFS_SUPER_MAGIC,
    FEATURE_COMPAT_SB_CHKSUM,
    FEATURE_COMPAT_XATTR_FILTER,
    FEATURE_INCOMPAT_CHUNKED_FILE,
    SLOT_SIZE,
    SUPERBLOCK,
    SUPERBLOCK_OFFSET,
)

HINT: Final = "the image is corrupt or unsupported; rebuild it or fetch it again"

# Incompat features whose effect is confined to inode kinds the reader refuses
# one by one (compressed layouts, long xattr prefixes, multi-device chunk
# indexes), so an image that merely declares them can still be read.
# 0x1 zero padding, 0x2 compression configs, 0x4 chunked files, 0x8 device
# table, 0x10 ztailpacking, 0x20 fragments, 0x40 long xattr prefixes.
_TOLERATED_INCOMPAT: Final = 0x1 | 0x2 | FEATURE_INCOMPAT_CHUNKED_FILE | 0x8 | 0x10 | 0x20 | 0x40
_INCOMPAT_48BIT: Final = 0x80  # changes the meaning of root_nid, i_nb and block numbers
_INCOMPAT_METABOX: Final = 0x100  # dirent nids with bit 63 point into another inode

# Superblock fields past feature_incompat (offset 84 within the superblock):
# available_compr_algs, extra_devices, devt_slotoff, dirblkbits.
_SB_TAIL: Final = struct.Struct("<HHHB")
_SB_TAIL_OFFSET: Final = 84
_SB_CHECKSUM_OFFSET: Final = 4
_NSEC_PER_SEC: Final = 1_000_000_000


@dataclass(frozen=True)
class ReaderLimits:
    """Bounds on untrusted images; exceeding one raises ``ImageFormatError``."""

    max_depth: int = 4096  # directory nesting below the root
    max_entries: int = 10_000_000  # paths yielded by one walk
    max_xattrs_per_inode: int = 8192  # composefs' own budget allows about 4,700
    max_image_bytes: int = 1 << 34  # open_image refuses larger files (16 GiB)
    max_read_bytes: int = 1 << 30  # largest file content read_inline returns


class Blob:
    """The image bytes with checked access; ``end`` is the usable length."""

    def __init__(self, data: bytes, source: str, end: int) -> None:
        self.data = data
        self.source = source
        self.end = end

    def error(self, detail: str) -> ImageFormatError:
        return ImageFormatError(f"{self.source}: {detail} ({HINT})")

    def check(self, off: int, length: int, what: str) -> None:
        """Raise unless ``[off, off+length)`` lies inside the image."""
        if off < 0 or length < 0 or off + length > self.end:
            raise self.error(
                f"{what} at byte {off} needs {length} bytes, but the image ends at byte {self.end}"
            )

    def unpack(self, fmt: struct.Struct, off: int, what: str) -> tuple[Any, ...]:  # Any: struct
        self.check(off, fmt.size, what)
        return fmt.unpack_from(self.data, off)

    def take(self, off: int, length: int, what: str) -> bytes:
        self.check(off, length, what)
        return bytes(self.data[off : off + length])


@dataclass(frozen=True)
class Header:
    """The 32-byte composefs header in front of the EROFS superblock (§3)."""

    flags: int
    format_version: int


@dataclass(frozen=True)
class Superblock:
    """The EROFS superblock fields the reader uses (§4)."""

    feature_compat: int
    feature_incompat: int
    root_nid: int
    inos: int
    build_time: int
    build_time_nsec: int
    blocks: int
    meta_blkaddr: int
    xattr_blkaddr: int

    @property
    def meta_offset(self) -> int:
        return self.meta_blkaddr * BLOCK_SIZE

    @property
    def xattr_offset(self) -> int:
        return self.xattr_blkaddr * BLOCK_SIZE

    @property
    def has_xattr_filter(self) -> bool:
        return bool(self.feature_compat & FEATURE_COMPAT_XATTR_FILTER)

    def nid_offset(self, nid: int) -> int:
        return self.meta_offset + nid * SLOT_SIZE


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C: Final = _crc32c_table()


def erofs_sb_checksum(block: bytes) -> int:
    """CRC32C as EROFS uses it: seed ~0, no final inversion (``crc32c(~0, …)``)."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in block:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def parse_header(data: bytes, source: str) -> Header | None:
    """The composefs header, or None for a plain EROFS image (no composefs magic)."""
    if len(data) < COMPOSEFS_HEADER.size:
        raise ImageFormatError(
            f"{source}: {len(data)} bytes is too small for an EROFS image ({HINT})"
        )
    magic, version, flags, fmt = COMPOSEFS_HEADER.unpack_from(data, 0)
    if magic != COMPOSEFS_MAGIC:
        return None
    if version != COMPOSEFS_HEADER_VERSION:
        raise ImageFormatError(
            f"{source}: composefs header version {version} at byte 4 is not "
            f"{COMPOSEFS_HEADER_VERSION} ({HINT})"
        )
    if fmt > COMPOSEFS_MAX_FORMAT_VERSION:
        raise ImageFormatError(
            f"{source}: composefs format version {fmt} at byte 12 is newer than "
            f"{COMPOSEFS_MAX_FORMAT_VERSION}, the newest this reader knows ({HINT})"
        )
    return Header(flags=flags, format_version=fmt)


def parse_superblock(data: bytes, source: str) -> Superblock:
    """Validate the superblock at byte 1024 and return its fields."""
    whole = Blob(data, source, len(data))
    fields = whole.unpack(SUPERBLOCK, SUPERBLOCK_OFFSET, "the EROFS superblock")
    (magic, checksum, compat, blkszbits, _extslots, root_nid, inos, build_time) = fields[:8]
    (build_nsec, blocks, meta_blkaddr, xattr_blkaddr, _uuid, _name, incompat) = fields[8:]
    at = SUPERBLOCK_OFFSET
    if magic != EROFS_SUPER_MAGIC:
        raise whole.error(
            f"bad EROFS magic {magic:#010x} at byte {at} (expected {EROFS_SUPER_MAGIC:#010x})"
        )
    if blkszbits != BLOCK_SIZE_BITS:
        raise whole.error(
            f"block size 2^{blkszbits} at byte {at + 12} is not 4096, the only size supported"
        )
    _compr, extra_devices, _devt, dirblkbits = whole.unpack(_SB_TAIL, at + _SB_TAIL_OFFSET, "sb")
    if dirblkbits != 0:
        raise whole.error(f"directory block bits {dirblkbits} at byte {at + 90} are not 0")
    unknown = incompat & ~_TOLERATED_INCOMPAT
    if unknown:
        raise whole.error(
            f"EROFS incompatible features {unknown:#x} at byte {at + 80} are not supported"
            " (48-bit layout, metabox or newer)"
        )
    if extra_devices:
        raise whole.error(f"{extra_devices} extra devices at byte {at + 86}: multi-device images")
    if build_nsec >= _NSEC_PER_SEC:
        raise whole.error(f"build_time_nsec {build_nsec} at byte {at + 32} is not below 10^9")
    size = blocks * BLOCK_SIZE
    if blocks == 0 or size > len(data):
        raise whole.error(
            f"superblock says {blocks} blocks ({size} bytes) at byte {at + 36}, "
            f"but the image has {len(data)} bytes (truncated?)"
        )
    if compat & FEATURE_COMPAT_SB_CHKSUM:
        block = bytearray(data[SUPERBLOCK_OFFSET:BLOCK_SIZE])
        block[_SB_CHECKSUM_OFFSET : _SB_CHECKSUM_OFFSET + 4] = bytes(4)
        actual = erofs_sb_checksum(bytes(block))
        if actual != checksum:
            raise whole.error(
                f"superblock checksum {checksum:#010x} at byte {at + 4} does not match "
                f"the computed crc32c {actual:#010x}"
            )
    sb = Superblock(
        feature_compat=compat,
        feature_incompat=incompat,
        root_nid=root_nid,
        inos=inos,
        build_time=build_time,
        build_time_nsec=build_nsec,
        blocks=blocks,
        meta_blkaddr=meta_blkaddr,
        xattr_blkaddr=xattr_blkaddr,
    )
    if sb.meta_offset >= size:
        raise whole.error(f"meta_blkaddr {meta_blkaddr} at byte {at + 40} is past the image end")
    if sb.nid_offset(root_nid) + SLOT_SIZE > size:
        raise whole.error(
            f"root nid {root_nid} at byte {at + 14} points at byte "
            f"{sb.nid_offset(root_nid)}, past the image end ({size})"
        )
    return sb
