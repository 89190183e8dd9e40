"""Test-only stand-in for powernode.verity.fsverity until that module lands.

Standard fs-verity SHA-256, 4096-byte blocks, no salt (COMPOSEFS.md §12).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

_BLOCK = 4096


def _root(data: bytes) -> bytes:
    if not data:
        return b"\0" * 32
    level = data
    while True:
        hashes = b"".join(
            hashlib.sha256(level[i : i + _BLOCK].ljust(_BLOCK, b"\0")).digest()
            for i in range(0, len(level), _BLOCK)
        )
        if len(level) <= _BLOCK:
            return hashes
        level = hashes


def fsverity_digest(data: bytes, *, algorithm: str = "sha256") -> bytes:
    assert algorithm == "sha256"
    desc = struct.pack("<BBBB4xQ64s32s144x", 1, 1, 12, 0, len(data), _root(data), b"")
    return hashlib.sha256(desc).digest()


def fsverity_digest_file(path: Path, **_: object) -> bytes:
    return fsverity_digest(Path(path).read_bytes())


def format_digest(d: bytes) -> str:
    return d.hex()


class FsVerityHasher:
    def __init__(self) -> None:
        self._buf = bytearray()

    def update(self, data: bytes) -> None:
        self._buf += data

    def digest(self) -> bytes:
        return fsverity_digest(bytes(self._buf))
