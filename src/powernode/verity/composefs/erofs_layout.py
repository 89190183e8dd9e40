"""On-disk constants and struct layouts of a composefs image (EROFS + composefs header).

Shared by the writer and the reader so the two cannot drift apart. Every
number here is cited from shared/notes/COMPOSEFS.md (the byte-level spec of
mkcomposefs 1.0.8) and agrees with the Linux EROFS on-disk format
(``fs/erofs/erofs_fs.h``). All integers are little-endian.
"""

from __future__ import annotations

import struct
from typing import Final

# --- geometry (§1, §2) ------------------------------------------------------
BLOCK_SIZE: Final = 4096
BLOCK_SIZE_BITS: Final = 12
SLOT_SIZE: Final = 32  # inodes start on 32-byte slots; nid = byte offset / 32
SLOT_SIZE_BITS: Final = 5
SUPERBLOCK_OFFSET: Final = 1024
INODE_TABLE_START: Final = 1152  # right after the 128-byte superblock
ROOT_NID: Final = INODE_TABLE_START // SLOT_SIZE  # 36: the root is always first

# --- composefs header (§3), 32 bytes at offset 0 ------------------------------
COMPOSEFS_MAGIC: Final = 0xD078629A
COMPOSEFS_HEADER_VERSION: Final = 1  # LCFS_EROFS_VERSION; not the format version
COMPOSEFS_FLAG_HAS_ACL: Final = 0x1
COMPOSEFS_MAX_FORMAT_VERSION: Final = 1  # §13: versions 0 and 1 exist
# magic, header version, flags, composefs (format) version, 16 zero bytes
COMPOSEFS_HEADER: Final = struct.Struct("<IIII16x")
assert COMPOSEFS_HEADER.size == 32

# --- EROFS superblock (§4), 128 bytes at offset 1024 --------------------------
EROFS_SUPER_MAGIC: Final = 0xE0F5E1E2
FEATURE_COMPAT_SB_CHKSUM: Final = 0x1  # never set by composefs
FEATURE_COMPAT_MTIME: Final = 0x2
FEATURE_COMPAT_XATTR_FILTER: Final = 0x4
COMPOSEFS_FEATURE_COMPAT: Final = FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER
FEATURE_INCOMPAT_CHUNKED_FILE: Final = 0x4  # composefs does NOT set it (§4)
# magic, checksum, feature_compat, blkszbits, sb_extslots, root_nid, inos,
# build_time (signed: mkcomposefs stores negative seconds as two's complement),
# build_time_nsec, blocks, meta_blkaddr, xattr_blkaddr, uuid, volume_name,
# feature_incompat, then 44 bytes that composefs leaves zero.
SUPERBLOCK: Final = struct.Struct("<IIIBBHQqIIII16s16sI44x")
assert SUPERBLOCK.size == 128

# --- inodes (§8.1) ------------------------------------------------------------
INODE_VERSION_COMPACT: Final = 0
INODE_VERSION_EXTENDED: Final = 1
LAYOUT_FLAT_PLAIN: Final = 0
LAYOUT_FLAT_INLINE: Final = 2
LAYOUT_CHUNK_BASED: Final = 4
# i_format = (datalayout << 1) | version
INODE_LAYOUT_BIT: Final = 1
INODE_LAYOUT_MASK: Final = 0x7

# format, xattr_icount, mode, nlink, size, 0 (newer: i_mtime), i_u, ino, uid, gid, 0
COMPACT_INODE: Final = struct.Struct("<HHHHIIIIHHI")
assert COMPACT_INODE.size == 32
# format, xattr_icount, mode, 0 (newer: i_nb), size, i_u, ino, uid, gid,
# mtime (signed, two's complement on disk), mtime_nsec, nlink, 16 zero bytes
EXTENDED_INODE: Final = struct.Struct("<HHHHQIIIIqII16x")
assert EXTENDED_INODE.size == 64

COMPACT_MAX_ID: Final = 0xFFFF  # uid/gid/nlink above this need an extended inode
COMPACT_MAX_SIZE: Final = 0xFFFFFFFF

# Chunk-based regular files (§8.3): i_u low 16 bits = chunkbits - 12; the
# 0x20 "indexes" bit stays clear, so the chunk map is u32 block addresses.
CHUNK_FORMAT_BLKBITS_MASK: Final = 0x1F
CHUNK_FORMAT_INDEXES: Final = 0x20
CHUNK_MIN_BITS: Final = 12
CHUNK_MAX_BITS: Final = 43
CHUNK_MAX_COUNT: Final = 1024  # more is EFBIG in mkcomposefs
NULL_ADDR: Final = 0xFFFFFFFF  # EROFS_NULL_ADDR: every chunk is a hole
CHUNK_ADDR: Final = struct.Struct("<I")

# --- xattrs (§7) ----------------------------------------------------------------
# Inline xattr area header: name filter, shared count, 7 zero bytes.
XATTR_IBODY_HEADER: Final = struct.Struct("<IB7x")
assert XATTR_IBODY_HEADER.size == 12
XATTR_SHARED_ID: Final = struct.Struct("<I")
# One entry: name suffix length, name index, value size; then suffix, value, pad to 4.
XATTR_ENTRY: Final = struct.Struct("<BBH")
assert XATTR_ENTRY.size == 4
XATTR_ALIGN: Final = 4
XATTR_MAX_SHARED_PER_INODE: Final = 128
XATTR_FILTER_SEED: Final = 0x25BBE08F  # XXH32 seed + name_index (§7.3)
XATTR_FILTER_BITS: Final = 32

XATTR_INDEX_NONE: Final = 0
XATTR_INDEX_USER: Final = 1
XATTR_INDEX_POSIX_ACL_ACCESS: Final = 2
XATTR_INDEX_POSIX_ACL_DEFAULT: Final = 3
XATTR_INDEX_TRUSTED: Final = 4
XATTR_INDEX_LUSTRE: Final = 5  # readers must know it; composefs never writes it
XATTR_INDEX_SECURITY: Final = 6

# The order the writer tries prefixes in (first match wins, §7.1).
XATTR_WRITE_PREFIXES: Final[tuple[tuple[bytes, int], ...]] = (
    (b"user.", XATTR_INDEX_USER),
    (b"system.posix_acl_access", XATTR_INDEX_POSIX_ACL_ACCESS),
    (b"system.posix_acl_default", XATTR_INDEX_POSIX_ACL_DEFAULT),
    (b"trusted.", XATTR_INDEX_TRUSTED),
    (b"security.", XATTR_INDEX_SECURITY),
)
# Every index an EROFS reader can meet, to rebuild the full name.
XATTR_INDEX_PREFIX: Final[dict[int, bytes]] = {
    XATTR_INDEX_NONE: b"",
    XATTR_INDEX_USER: b"user.",
    XATTR_INDEX_POSIX_ACL_ACCESS: b"system.posix_acl_access",
    XATTR_INDEX_POSIX_ACL_DEFAULT: b"system.posix_acl_default",
    XATTR_INDEX_TRUSTED: b"trusted.",
    XATTR_INDEX_LUSTRE: b"lustre.",
    XATTR_INDEX_SECURITY: b"security.",
}
ACL_XATTR_NAMES: Final = frozenset({b"system.posix_acl_access", b"system.posix_acl_default"})

# Limits on input xattrs (§5.1).
XATTR_NAME_MAX: Final = 255
XATTR_VALUE_MAX: Final = 65535
XATTR_INODE_BUDGET: Final = 32767  # 12 + sum(7 + len(name) + len(value)) must not exceed

# --- overlayfs xattrs composefs writes (§6.1, §8.2) ----------------------------------
OVERLAY_PREFIX: Final = b"trusted.overlay."
OVERLAY_ESCAPED_PREFIX: Final = b"trusted.overlay.overlay."
OVERLAY_METACOPY: Final = b"trusted.overlay.metacopy"
OVERLAY_REDIRECT: Final = b"trusted.overlay.redirect"
OVERLAY_OPAQUE: Final = b"trusted.overlay.opaque"
OVERLAY_ESCAPED_WHITEOUT: Final = b"trusted.overlay.overlay.whiteout"
OVERLAY_ESCAPED_WHITEOUTS: Final = b"trusted.overlay.overlay.whiteouts"
OVERLAY_ESCAPED_OPAQUE: Final = b"trusted.overlay.overlay.opaque"
USER_OVERLAY_WHITEOUT: Final = b"user.overlay.whiteout"
USER_OVERLAY_WHITEOUTS: Final = b"user.overlay.whiteouts"
USER_OVERLAY_OPAQUE: Final = b"user.overlay.opaque"
# metacopy value: version 0, length 36, flags 0, hash algorithm 1 (sha256), digest
METACOPY_HEADER: Final = struct.Struct("<BBBB")
METACOPY_VERSION: Final = 0
METACOPY_LENGTH: Final = 36
FS_VERITY_HASH_ALG_SHA256: Final = 1
SELINUX_XATTR: Final = b"security.selinux"

# --- directories (§8.3) ---------------------------------------------------------------
# nid, nameoff, file_type, reserved
DIRENT: Final = struct.Struct("<QHBx")
assert DIRENT.size == 12
DIR_TAIL_MAX: Final = BLOCK_SIZE // 2  # a last group above 2048 bytes gets a full block
NAME_MAX: Final = 255
SYMLINK_MAX: Final = 4095
INLINE_CONTENT_MAX: Final = 64  # directory mode: files this small live in the image

FT_UNKNOWN: Final = 0
FT_REG_FILE: Final = 1
FT_DIR: Final = 2
FT_CHRDEV: Final = 3
FT_BLKDEV: Final = 4
FT_FIFO: Final = 5
FT_SOCK: Final = 6
FT_SYMLINK: Final = 7

# The 256 root whiteout stubs (§6.1 step 6): mode 020644, rdev 0.
ROOT_STUB_MODE: Final = 0o020644
ROOT_STUB_COUNT: Final = 256
