"""Extended attributes of one inode, and how composefs' overlay xattrs read back.

On-disk format: COMPOSEFS.md §7 and ``erofs_fs.h``: an inline area of a
12-byte header (name filter, shared count), shared ids (4-byte units from
``xattr_blkaddr``), then inline entries that must fill the area exactly, as
the kernel requires. The overlay xattrs composefs adds (§6.1, §8.2) are
turned back into payload/digest/whiteout the way ``composefs-info`` does.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import Final

import xxhash

from powernode.verity.composefs.erofs_layout import (
    METACOPY_LENGTH,
    NAME_MAX,
    OVERLAY_ESCAPED_OPAQUE,
    OVERLAY_ESCAPED_PREFIX,
    OVERLAY_ESCAPED_WHITEOUT,
    OVERLAY_ESCAPED_WHITEOUTS,
    OVERLAY_METACOPY,
    OVERLAY_PREFIX,
    OVERLAY_REDIRECT,
    USER_OVERLAY_OPAQUE,
    USER_OVERLAY_WHITEOUT,
    USER_OVERLAY_WHITEOUTS,
    XATTR_ALIGN,
    XATTR_ENTRY,
    XATTR_FILTER_BITS,
    XATTR_FILTER_SEED,
    XATTR_IBODY_HEADER,
    XATTR_INDEX_PREFIX,
    XATTR_SHARED_ID,
)
from powernode.verity.composefs.reader.inode import Inode
from powernode.verity.composefs.reader.super import Blob, ReaderLimits, Superblock

_LONG_PREFIX_BIT: Final = 0x80  # name_index refers to the long-prefix table
_METACOPY_DIGEST_OFFSET: Final = 4
_OPAQUE_IN_WHITEOUT_DIR: Final = b"x"  # §6.1 step 3, format version 1


def _entry(blob: Blob, off: int, limit: int, what: str) -> tuple[bytes, bytes, int, int]:
    """One xattr entry at ``off`` ending before ``limit``: (name, value, index, size)."""
    if off + XATTR_ENTRY.size > limit:
        raise blob.error(f"{what} at byte {off}: entry header runs past byte {limit}")
    name_len, index, value_size = blob.unpack(XATTR_ENTRY, off, what)
    size = -(-(XATTR_ENTRY.size + name_len + value_size) // XATTR_ALIGN) * XATTR_ALIGN
    if off + size > limit:
        raise blob.error(f"{what} at byte {off}: entry of {size} bytes runs past byte {limit}")
    if index & _LONG_PREFIX_BIT:
        raise blob.error(f"{what} at byte {off}: long xattr name prefixes are not supported")
    prefix = XATTR_INDEX_PREFIX.get(index)
    if prefix is None:
        raise blob.error(f"{what} at byte {off}: unknown xattr name index {index}")
    suffix = blob.take(off + XATTR_ENTRY.size, name_len, what)
    name = prefix + suffix
    if not name or len(name) > NAME_MAX or b"\0" in name:
        raise blob.error(f"{what} at byte {off}: invalid xattr name {name!r}")
    value = blob.take(off + XATTR_ENTRY.size + name_len, value_size, what)
    return name, value, index, size


def _filter_bit(index: int, suffix: bytes) -> int:
    return xxhash.xxh32_intdigest(suffix, seed=XATTR_FILTER_SEED + index) % XATTR_FILTER_BITS


def read_xattrs(blob: Blob, sb: Superblock, ino: Inode, limits: ReaderLimits) -> dict[bytes, bytes]:
    """All xattrs of ``ino`` (shared and inline), by full name, sorted by name."""
    return dict(sorted(read_xattr_entries(blob, sb, ino, limits)))


def read_xattr_entries(
    blob: Blob, sb: Superblock, ino: Inode, limits: ReaderLimits
) -> list[tuple[bytes, bytes]]:
    """All xattrs of ``ino`` in on-disk order: the inline entries, then the shared ones in
    the order of the inode's shared ids (the order libcomposefs reads them back in)."""
    if ino.xattr_size == 0:
        return []
    what = f"inode nid {ino.nid}: xattr"
    start = ino.xattr_offset
    end = start + ino.xattr_size
    name_filter, shared = blob.unpack(XATTR_IBODY_HEADER, start, what)
    pos = start + XATTR_IBODY_HEADER.size + shared * XATTR_SHARED_ID.size
    if pos > end:
        raise blob.error(
            f"{what} area at byte {start}: {shared} shared ids run past the area end ({end})"
        )
    found: list[tuple[bytes, bytes, int]] = []  # shared first: the order they are checked in
    for i in range(shared):
        id_at = start + XATTR_IBODY_HEADER.size + i * XATTR_SHARED_ID.size
        (xid,) = blob.unpack(XATTR_SHARED_ID, id_at, what)
        entry_at = sb.xattr_offset + xid * XATTR_ALIGN
        name, value, index, _ = _entry(blob, entry_at, blob.end, f"{what} shared id {xid}")
        found.append((name, value, index))
    while pos < end:
        if len(found) >= limits.max_xattrs_per_inode:
            raise blob.error(
                f"{what}s at byte {start}: more than {limits.max_xattrs_per_inode} in one inode"
            )
        name, value, index, size = _entry(blob, pos, end, what)
        found.append((name, value, index))
        pos += size
    seen: set[bytes] = set()
    for name, _, index in found:
        if name in seen:
            raise blob.error(f"{what} {name!r} appears twice in the inode at byte {start}")
        seen.add(name)
        suffix = name[len(XATTR_INDEX_PREFIX[index]) :]
        # With the XATTR_FILTER feature the kernel trusts this bloom filter:
        # a set bit means "absent", so getxattr would hide this xattr.
        if sb.has_xattr_filter and name_filter >> _filter_bit(index, suffix) & 1:
            raise blob.error(f"{what} {name!r}: the name filter at byte {start} marks it absent")
    return [(n, v) for n, v, _ in found[shared:] + found[:shared]]


def composefs_info_xattrs(
    entries: list[tuple[bytes, bytes]], mode: int
) -> list[tuple[bytes, bytes]]:
    """The xattrs ``composefs-info dump`` prints for an inode, in its order.

    libcomposefs 1.0.8 ``lcfs_build_node_from_image`` reads the entries in on-disk
    order and keeps each through ``lcfs_build_node_erofs_xattr``: redirect and metacopy
    become payload and digest; the escaped whiteout turns a regular file into a
    whiteout (the file type changes for the entries after it); the whiteout markers
    are skipped; ``trusted.overlay.overlay.X`` is unescaped to ``trusted.overlay.X``;
    any other ``trusted.overlay.*`` is skipped; everything else is kept, the opaque
    markers of a directory holding whiteouts included (``user.overlay.opaque=x``,
    and ``trusted.overlay.opaque=x`` from its escaped form). A name set twice is
    removed and appended again (``lcfs_node_set_xattr_internal``).
    """
    is_reg = stat.S_IFMT(mode) == stat.S_IFREG
    skipped = {OVERLAY_ESCAPED_WHITEOUTS, USER_OVERLAY_WHITEOUT, USER_OVERLAY_WHITEOUTS}
    out: dict[bytes, bytes] = {}
    for stored, value in entries:
        if stored in (OVERLAY_REDIRECT, OVERLAY_METACOPY) or stored in skipped:
            continue
        if stored == OVERLAY_ESCAPED_WHITEOUT and is_reg:
            is_reg = False  # now a character device 0:0
            continue
        name = stored
        if stored.startswith(OVERLAY_PREFIX):
            if not stored.startswith(OVERLAY_ESCAPED_PREFIX):
                continue
            name = OVERLAY_PREFIX + stored[len(OVERLAY_ESCAPED_PREFIX) :]
        out.pop(name, None)
        out[name] = value
    return list(out.items())


@dataclass(frozen=True)
class Overlay:
    """What composefs' overlay xattrs say about one inode, and the xattrs to show."""

    xattrs: dict[bytes, bytes]
    payload: bytes | None  # redirect target without its leading "/"
    digest: bytes | None  # fs-verity digest from trusted.overlay.metacopy
    metacopy: bool  # the content lives outside the image
    whiteout: bool  # a regular file that stands for an overlay whiteout


def interpret(raw: dict[bytes, bytes], mode: int, *, cooked: bool) -> Overlay:
    """Decode redirect/metacopy; with ``cooked`` hide composefs' internals (§6.1).

    Cooked is the tree mkcomposefs was given: internal ``trusted.overlay.*``
    xattrs are dropped, escaped ``trusted.overlay.overlay.X`` becomes
    ``trusted.overlay.X``, whiteout markers vanish and the file is a whiteout,
    and the opaque ``x`` markers of a directory holding whiteouts vanish too.
    ``composefs-info dump`` keeps those markers and prints xattrs in on-disk
    order: :func:`composefs_info_xattrs` is its view.
    """
    is_reg = stat.S_IFMT(mode) == stat.S_IFREG
    redirect = raw.get(OVERLAY_REDIRECT) if is_reg else None
    payload = redirect
    if redirect is not None and len(redirect) > 1 and redirect.startswith(b"/"):
        payload = redirect[1:]
    meta = raw.get(OVERLAY_METACOPY) if is_reg else None
    digest = None
    if meta is not None and len(meta) == METACOPY_LENGTH:
        digest = meta[_METACOPY_DIGEST_OFFSET:]
    whiteout = is_reg and OVERLAY_ESCAPED_WHITEOUT in raw
    if not cooked:
        return Overlay(dict(raw), payload, digest, meta is not None, False)
    # A directory holding converted whiteouts gets opaque "x" markers (§6.1 3).
    marks_whiteouts = OVERLAY_ESCAPED_WHITEOUTS in raw
    hidden = {OVERLAY_ESCAPED_WHITEOUT, OVERLAY_ESCAPED_WHITEOUTS}
    hidden |= {USER_OVERLAY_WHITEOUT, USER_OVERLAY_WHITEOUTS}
    shown: dict[bytes, bytes] = {}
    for name, value in raw.items():
        if name in hidden:
            continue
        opaque_marker = name in (OVERLAY_ESCAPED_OPAQUE, USER_OVERLAY_OPAQUE)
        if marks_whiteouts and opaque_marker and value == _OPAQUE_IN_WHITEOUT_DIR:
            continue
        if name.startswith(OVERLAY_ESCAPED_PREFIX):
            shown[OVERLAY_PREFIX + name[len(OVERLAY_ESCAPED_PREFIX) :]] = value
        elif not name.startswith(OVERLAY_PREFIX):
            shown[name] = value
    return Overlay(dict(sorted(shown.items())), payload, digest, meta is not None, whiteout)
