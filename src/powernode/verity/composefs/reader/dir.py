"""Directory entries of one directory inode.

EROFS directory data (``erofs_fs.h``; COMPOSEFS.md §8.3) is cut into 4096-byte
blocks, the last one possibly short (the inline tail). Each block holds
12-byte dirents, then their names without NULs. The first dirent's nameoff
gives the dirent count; a name ends at the next dirent's nameoff, or for the
last one at the block end or the first NUL. Names are sorted bytewise across
the whole directory, because the kernel looks them up by binary search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from powernode.verity.composefs.erofs_layout import BLOCK_SIZE, DIRENT, FT_SYMLINK, NAME_MAX
from powernode.verity.composefs.reader.super import Blob

DOT: Final = b"."
DOTDOT: Final = b".."


@dataclass(frozen=True, slots=True)
class Dirent:
    name: bytes
    nid: int
    file_type: int


def parse_dirents(blob: Blob, data: bytes, dir_nid: int) -> list[Dirent]:
    """Every dirent of a directory whose data is ``data``; raises ImageFormatError."""
    out: list[Dirent] = []
    previous = b""
    for block_no, start in enumerate(range(0, len(data), BLOCK_SIZE)):
        block = data[start : start + BLOCK_SIZE]
        where = f"directory nid {dir_nid}, block {block_no}"
        for entry in _parse_block(blob, block, where):
            if out and entry.name <= previous:
                raise blob.error(
                    f"{where}: name {entry.name!r} is not after {previous!r} in byte order"
                    " (unsorted or duplicate entries)"
                )
            previous = entry.name
            out.append(entry)
    return out


def _parse_block(blob: Blob, block: bytes, where: str) -> list[Dirent]:
    size = len(block)
    if size < DIRENT.size:
        raise blob.error(f"{where}: {size} bytes cannot hold a dirent")
    first_off = DIRENT.unpack_from(block, 0)[1]
    if first_off < DIRENT.size or first_off >= size or first_off % DIRENT.size:
        raise blob.error(
            f"{where}: first nameoff {first_off} is not a multiple of 12 inside the block ({size})"
        )
    count = first_off // DIRENT.size
    raw = [DIRENT.unpack_from(block, i * DIRENT.size) for i in range(count)]
    out: list[Dirent] = []
    for i, (nid, nameoff, ftype) in enumerate(raw):
        if i + 1 < count:
            end = raw[i + 1][1]
        else:
            nul = block.find(b"\0", nameoff)
            end = size if nul < 0 else nul
        if not first_off <= nameoff < end <= size:
            raise blob.error(
                f"{where}: dirent {i} has name bytes {nameoff}..{end}, outside "
                f"{first_off}..{size} or empty"
            )
        name = block[nameoff:end]
        if len(name) > NAME_MAX or b"/" in name or b"\0" in name:
            raise blob.error(f"{where}: dirent {i} has an invalid name {name[:64]!r}")
        if not 0 < ftype <= FT_SYMLINK:
            raise blob.error(f"{where}: dirent {i} ({name!r}) has file type {ftype}")
        out.append(Dirent(name, nid, ftype))
    return out
