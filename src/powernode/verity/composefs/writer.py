"""Write composefs images byte-identical to mkcomposefs 1.0.8.

`write_image` emits a Tree (§10 of shared/notes/COMPOSEFS.md: header,
superblock, inodes in BFS order, shared xattr table, data blocks) and returns
the image's fs-verity SHA-256 digest, the value `mkcomposefs --print-digest`
prints. `build_image` is the directory-mode front end: scan, copy objects
into a digest store, then write the image atomically.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import xxhash

from powernode.durable import atomic_file
from powernode.errors import SourceTreeError
from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.objects import (
    ObjectRef,
    ObjectStager,
    collect_objects,
    store_objects,
)
from powernode.verity.composefs.plan import Inode, Plan, make_plan, split_name
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.tree import Tree
from powernode.verity.fsverity import fsverity_digest

log = logging.getLogger(__name__)

_FILE_TYPES = {
    stat.S_IFREG: L.FT_REG_FILE,
    stat.S_IFDIR: L.FT_DIR,
    stat.S_IFCHR: L.FT_CHRDEV,
    stat.S_IFBLK: L.FT_BLKDEV,
    stat.S_IFIFO: L.FT_FIFO,
    stat.S_IFSOCK: L.FT_SOCK,
    stat.S_IFLNK: L.FT_SYMLINK,
}


@dataclass(frozen=True)
class ImageResult:
    """What a build produced: the composefs digest (hex), image size, objects referenced."""

    digest: str
    size: int
    objects: tuple[ObjectRef, ...]


def _xattr_entry(name: bytes, value: bytes) -> bytes:
    index, suffix = split_name(name)
    raw = L.XATTR_ENTRY.pack(len(suffix), index, len(value)) + suffix + value
    return raw + b"\0" * (-len(raw) % L.XATTR_ALIGN)


def _name_filter(names: Iterable[bytes]) -> int:
    """§7.3: a bloom filter of XXH32(suffix, seed + index) mod 32, stored inverted."""
    return _name_filter_of(tuple(names))


@functools.lru_cache(maxsize=1024)
def _name_filter_of(names: tuple[bytes, ...]) -> int:
    # Cached: most inodes of an image carry the same few names (every external
    # file the two overlay ones), so the hashes are computed once per set.
    mask = 0
    for name in names:
        index, suffix = split_name(name)
        seed = L.XATTR_FILTER_SEED + index
        mask |= 1 << (xxhash.xxh32_intdigest(suffix, seed=seed) % L.XATTR_FILTER_BITS)
    return ~mask & 0xFFFFFFFF


def _dir_group(group: list[tuple[bytes, Inode]]) -> bytes:
    """§8.3: the group's dirents, then its names, nameoff relative to the group."""
    heads = bytearray()
    names = bytearray()
    base = L.DIRENT.size * len(group)
    for name, target in group:
        ftype = _FILE_TYPES[stat.S_IFMT(target.mode)]
        heads += L.DIRENT.pack(target.nid, base + len(names), ftype)
        names += name
    return bytes(heads + names)


def _i_u(ino: Inode) -> int:
    fmt = stat.S_IFMT(ino.mode)
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        return ino.rdev & 0xFFFFFFFF  # mkcomposefs truncates rdev to 32 bits (§15)
    if ino.external:
        return ino.chunkbits - L.CHUNK_MIN_BITS
    return ino.first_block if ino.n_blocks else 0


def _core(ino: Inode) -> bytes:
    i_format = (ino.layout << L.INODE_LAYOUT_BIT) | (
        L.INODE_VERSION_COMPACT if ino.compact else L.INODE_VERSION_EXTENDED
    )
    icount = 0 if ino.xattr_size == 0 else (ino.xattr_size - L.XATTR_IBODY_HEADER.size) // 4 + 1
    mode = ino.mode & 0xFFFF
    if ino.compact:
        return L.COMPACT_INODE.pack(
            i_format, icount, mode, ino.nlink, ino.size, 0, _i_u(ino), ino.ino, ino.uid, ino.gid, 0
        )
    return L.EXTENDED_INODE.pack(
        i_format,
        icount,
        mode,
        0,
        ino.size,
        _i_u(ino),
        ino.ino,
        ino.uid,
        ino.gid,
        ino.mtime,
        ino.mtime_nsec,
        ino.nlink,
    )


def _xattr_area(ino: Inode) -> bytes:
    if ino.xattr_size == 0:
        return b""
    name_filter = _name_filter_of(tuple(ino.xattrs))
    out = bytearray(L.XATTR_IBODY_HEADER.pack(name_filter, len(ino.shared_ids)))
    for sid in ino.shared_ids:
        out += L.XATTR_SHARED_ID.pack(sid)
    for name, value in ino.inline_pairs:
        out += _xattr_entry(name, value)
    assert len(out) == ino.xattr_size
    return bytes(out)


def _tail_and_blocks(ino: Inode) -> tuple[bytes, list[bytes]]:
    """The inline tail and the full data blocks (unpadded) of one inode."""
    fmt = stat.S_IFMT(ino.mode)
    if fmt == stat.S_IFDIR:
        groups = [_dir_group(g) for g in ino.dir_groups]
        if ino.tail_len:
            return groups[-1], groups[:-1]
        return b"", groups
    if ino.external:
        # every chunk is a hole (EROFS_NULL_ADDR): the content lives in the object store
        chunk_map = L.CHUNK_ADDR.pack(L.NULL_ADDR) * (ino.tail_len // L.CHUNK_ADDR.size)
        if ino.tail_moved:  # source only: an 0xFF block stands in for the map
            return b"", [b"\xff" * L.BLOCK_SIZE]
        return chunk_map, []
    if ino.content is not None:
        blocks = [ino.content[: L.BLOCK_SIZE]] if ino.n_blocks else []
        tail = ino.content[len(ino.content) - ino.tail_len :] if ino.tail_len else b""
        return tail, blocks
    if fmt == stat.S_IFLNK:
        return (b"", [ino.target]) if ino.n_blocks else (ino.target, [])
    return b"", []


def emit(plan: Plan) -> bytes:
    """§10: the image bytes of a placed plan."""
    image = bytearray(plan.total_blocks * L.BLOCK_SIZE)
    flags = L.COMPOSEFS_FLAG_HAS_ACL if plan.has_acl else 0
    L.COMPOSEFS_HEADER.pack_into(
        image, 0, L.COMPOSEFS_MAGIC, L.COMPOSEFS_HEADER_VERSION, flags, plan.version
    )
    L.SUPERBLOCK.pack_into(
        image,
        L.SUPERBLOCK_OFFSET,
        L.EROFS_SUPER_MAGIC,
        0,
        L.COMPOSEFS_FEATURE_COMPAT,
        L.BLOCK_SIZE_BITS,
        0,
        plan.inodes[0].nid,
        len(plan.inodes),
        plan.build_time[0],
        plan.build_time[1],
        plan.total_blocks,
        0,
        plan.inodes_end // L.BLOCK_SIZE,
        b"",
        b"",
        0,
    )
    data_pos = plan.data_start
    for ino in plan.inodes:
        tail, blocks = _tail_and_blocks(ino)
        raw = _core(ino) + _xattr_area(ino) + tail
        pos = ino.nid * L.SLOT_SIZE
        image[pos : pos + len(raw)] = raw
        assert len(blocks) == ino.n_blocks
        for block in blocks:
            image[data_pos : data_pos + len(block)] = block
            data_pos += L.BLOCK_SIZE
    pos = plan.inodes_end
    for name, value in plan.shared_table:
        entry = _xattr_entry(name, value)
        image[pos : pos + len(entry)] = entry
        pos += len(entry)
    assert data_pos == len(image)
    return bytes(image)


def image_bytes(tree: Tree, *, version: int | None = None) -> bytes:
    """The complete image of ``tree`` (format version chosen like mkcomposefs if None)."""
    return emit(make_plan(tree, version=version))


def write_image(tree: Tree, out: BinaryIO, *, version: int | None = None) -> str:
    """Write the image of ``tree`` to ``out``; returns its fs-verity sha256 digest (hex)."""
    data = image_bytes(tree, version=version)
    out.write(data)
    return fsverity_digest(data).hex()


def write_tree(
    tree: Tree,
    image: Path | None,
    *,
    digest_store: Path | None = None,
    version: int | None = None,
) -> ImageResult:
    """Copy the tree's objects into ``digest_store``, then write ``image`` atomically."""
    data = image_bytes(tree, version=version)
    objects = collect_objects(tree)
    if digest_store is not None:
        store_objects(objects, digest_store)
    return _finish(data, image, objects)


def build_image(
    src: Path,
    image: Path | None,
    *,
    digest_store: Path | None = None,
    policy: TreePolicy = TreePolicy(),  # noqa: B008 - frozen, safe as a default
    threads: int = 0,
    processes: int = 0,
) -> ImageResult:
    """mkcomposefs SRC [IMAGE]: scan ``src`` and write its image (directory mode).

    With ``digest_store``, each file is read once: the scan stages the bytes
    it hashes as the object, and the objects are published before the image
    is written (so a present image implies its objects). On any error the
    store is left as it was and no image is written. ``threads`` and
    ``processes`` (image only: ignored with a store): see :func:`scan_tree`.
    """
    if digest_store is None:
        tree = scan_tree(src, policy=policy, threads=threads, processes=processes)
        return write_tree(tree, image)
    stager = ObjectStager(digest_store)
    try:
        tree = scan_tree(src, policy=policy, stager=stager, threads=threads)
        data = image_bytes(tree)
        stager.publish()
    except BaseException:
        stager.abort()
        raise
    return _finish(data, image, collect_objects(tree))


def _finish(data: bytes, image: Path | None, objects: tuple[ObjectRef, ...]) -> ImageResult:
    digest = fsverity_digest(data).hex()
    if image is not None:
        atomic_write(image, data)
    log.info("composefs image %s: %d bytes, digest %s", image, len(data), digest)
    return ImageResult(digest, len(data), objects)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """:func:`powernode.durable.write_bytes`, its errors said as the image's."""
    if path.is_dir():
        raise SourceTreeError(f"{path}: is a directory; give a file name for the image")
    stack = contextlib.ExitStack()
    try:
        out = stack.enter_context(atomic_file(path, mode=mode))
    except OSError as e:
        raise SourceTreeError(f"{path}: cannot create the image: {e.strerror}") from e
    try:
        with stack:
            out.write(data)
    except OSError as e:
        raise SourceTreeError(f"{path}: cannot write the image: {e.strerror}") from e
