"""The fs-verity Merkle tree and file digest, computed over bytes (no IO).

Follows the kernel's Documentation/filesystems/fsverity.rst ("File digest
computation", "Merkle tree") and fsverity-utils' lib/compute_digest.c:

- The data is split into ``block_size`` blocks, the last one zero-padded.
  Level 0 of the tree holds the hash of every data block.
- Each level's hashes are concatenated and split into blocks the same way
  (the last one zero-padded); the next level holds the hashes of those blocks.
  This repeats until a level holds a single hash: the root hash. A file of at
  most one block has the hash of that (padded) block as its root hash; an
  empty file has an all-zero root hash.
- With a salt, every block hash is ``H(salt zero-padded to a multiple of the
  hash's input block size || block)``.
- The file digest is ``H(fsverity_descriptor)``, the 256-byte struct of
  include/uapi/linux/fsverity.h with ``sig_size`` zero.

Level 0 is nearly all the work (one hash per data block); the levels above it
are 1/128 of the data or less, so they are kept as one pending block per
level and memory stays bounded by ``levels x block_size`` for any file size.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from powernode.errors import ConfigError

# fs-verity hash algorithm numbers (FS_VERITY_HASH_ALG_*), digest size and the
# hash's own input block size, which the salt is padded to.
_ALGORITHMS: dict[str, tuple[int, int, int]] = {
    "sha256": (1, 32, 64),
    "sha512": (2, 64, 128),
}
# "any power of 2 between (inclusively) 1024 and the minimum of the system page
# size and the filesystem block size" (fsverity.rst); 64 KiB is the largest
# page size Linux has.
MIN_BLOCK_SIZE = 1024
MAX_BLOCK_SIZE = 65536
MAX_SALT_SIZE = 32  # FS_VERITY_MAX_SALT_SIZE: the descriptor's salt field
_DESCRIPTOR = struct.Struct("<BBBBIQ64s32s144x")  # struct fsverity_descriptor, 256 bytes

HashFactory = Callable[..., Any]


@dataclass(frozen=True)
class VerityParams:
    """Checked Merkle tree parameters; build with :func:`verity_params`."""

    algorithm: str
    algorithm_id: int
    digest_size: int
    block_size: int
    log_blocksize: int
    salt: bytes
    padded_salt: bytes

    def new_hash(self, data: bytes = b"") -> Any:  # Any: hashlib has no public HASH type
        """A fresh hashlib object for the descriptor (no salt)."""
        return hashlib.new(self.algorithm, data)


def verity_params(
    algorithm: str = "sha256", block_size: int = 4096, salt: bytes = b""
) -> VerityParams:
    """Validate the parameters the way the kernel's FS_IOC_ENABLE_VERITY does."""
    if algorithm not in _ALGORITHMS:
        raise ConfigError(
            f"fs-verity hash algorithm {algorithm!r} is not supported; "
            f"use one of: {', '.join(_ALGORITHMS)}"
        )
    alg_id, digest_size, hash_block = _ALGORITHMS[algorithm]
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int)
        or block_size < MIN_BLOCK_SIZE
        or block_size > MAX_BLOCK_SIZE
        or block_size & (block_size - 1)
    ):
        raise ConfigError(
            f"fs-verity block size {block_size!r} is not valid; use a power of 2 "
            f"from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} (4096 is the usual one)"
        )
    if not isinstance(salt, bytes | bytearray | memoryview):
        raise ConfigError(f"fs-verity salt must be bytes, not {type(salt).__name__}")
    salt = bytes(salt)
    if len(salt) > MAX_SALT_SIZE:
        raise ConfigError(
            f"fs-verity salt is {len(salt)} bytes; at most {MAX_SALT_SIZE} bytes fit "
            "in the descriptor"
        )
    pad = -len(salt) % hash_block
    return VerityParams(
        algorithm=algorithm,
        algorithm_id=alg_id,
        digest_size=digest_size,
        block_size=block_size,
        log_blocksize=block_size.bit_length() - 1,
        salt=salt,
        padded_salt=salt + b"\0" * pad if salt else b"",
    )


def _constructor(algorithm: str) -> HashFactory:
    # hashlib.sha256/sha512 are the OpenSSL constructors; calling them directly
    # skips hashlib.new()'s name lookup, which matters at one call per block.
    factory: HashFactory = hashlib.sha256 if algorithm == "sha256" else hashlib.sha512
    return factory


def hash_blocks(params: VerityParams, data: memoryview | bytes) -> bytes:
    """The concatenated hashes of each ``block_size`` block of ``data``.

    ``len(data)`` must be a multiple of the block size (the caller pads). This
    is the hot loop: one hashlib call per block, which releases the GIL for
    blocks of 2 KiB and more, so callers may run it on several threads.
    """
    bs = params.block_size
    mv = memoryview(data)
    new = _constructor(params.algorithm)
    if not params.padded_salt:
        return b"".join([new(mv[i : i + bs]).digest() for i in range(0, len(mv), bs)])
    salted = new(params.padded_salt)
    out = []
    for i in range(0, len(mv), bs):
        h = salted.copy()
        h.update(mv[i : i + bs])
        out.append(h.digest())
    return b"".join(out)


class MerkleLevels:
    """The tree above level 0: one pending block of hashes per level.

    :meth:`add` takes level-0 hashes in data order; whenever a level's pending
    block fills, its hash moves up one level. :meth:`root` pads and hashes the
    partial blocks left at the end.
    """

    def __init__(self, params: VerityParams) -> None:
        self._params = params
        self._pending: list[bytearray] = []
        self._counts: list[int] = []  # hashes received by each level so far

    def copy(self) -> MerkleLevels:
        other = MerkleLevels(self._params)
        other._pending = [bytearray(b) for b in self._pending]
        other._counts = list(self._counts)
        return other

    def add(self, hashes: bytes, level: int = 0) -> None:
        """Append hashes (a multiple of the digest size) to ``level``."""
        bs = self._params.block_size
        while hashes:
            if level == len(self._pending):
                self._pending.append(bytearray())
                self._counts.append(0)
            self._counts[level] += len(hashes) // self._params.digest_size
            buf = self._pending[level]
            buf += hashes
            # block_size is a multiple of digest_size, so blocks end on hash boundaries
            full = len(buf) - len(buf) % bs
            if not full:
                return
            hashes = hash_blocks(self._params, bytes(buf[:full]))
            del buf[:full]
            level += 1

    def root(self) -> bytes:
        """The root hash; all zeros when no data block was hashed."""
        if not self._counts:
            return b"\0" * self._params.digest_size
        level = 0
        while self._counts[level] > 1:
            buf = self._pending[level]
            if buf:
                block = bytes(buf) + b"\0" * (-len(buf) % self._params.block_size)
                buf.clear()
                self.add(hash_blocks(self._params, block), level + 1)
            level += 1
        return bytes(self._pending[level])


def file_digest(params: VerityParams, data_size: int, root_hash: bytes) -> bytes:
    """H(fsverity_descriptor): version 1, no signature, reserved bytes zero."""
    descriptor = _DESCRIPTOR.pack(
        1,
        params.algorithm_id,
        params.log_blocksize,
        len(params.salt),
        0,  # sig_size: always 0 in the digest, as the kernel computes it
        data_size,
        root_hash,
        params.salt,
    )
    digest: bytes = _constructor(params.algorithm)(descriptor).digest()
    return digest


def digest_bytes(params: VerityParams, data: bytes | bytearray | memoryview) -> bytes:
    """The fs-verity digest of ``data`` held whole in memory, in one pass.

    The same value as :class:`FsVerityHasher` fed ``data`` (fsverity.rst, "File
    digest computation"), without its per-call bookkeeping: a composefs build
    digests thousands of small files, where that bookkeeping cost more than
    the hashing. Level 0 hashes the whole blocks straight from ``data`` (no
    copy) and the zero-padded last block; each upper level is one pass.
    """
    mv = data if isinstance(data, bytes) else memoryview(data).cast("B")
    size = len(mv)
    bs = params.block_size
    if size <= bs and not params.padded_salt:  # most files: one block, one hash
        root = _constructor(params.algorithm)(bytes(mv).ljust(bs, b"\0")).digest() if size else b""
        return file_digest(params, size, root or b"\0" * params.digest_size)
    whole = size - size % bs
    level = hash_blocks(params, mv[:whole]) if whole else b""
    if whole != size:
        level += hash_blocks(params, bytes(mv[whole:]).ljust(bs, b"\0"))
    while len(level) > params.digest_size:
        level = hash_blocks(params, level.ljust(len(level) + (-len(level) % bs), b"\0"))
    return file_digest(params, size, level)


class FsVerityHasher:
    """Incremental fs-verity digest: ``update()`` in any pieces, then ``digest()``.

    Lets a writer hash a stream while copying it. ``digest()`` does not end the
    hashing: more data may follow.
    """

    def __init__(
        self, *, algorithm: str = "sha256", block_size: int = 4096, salt: bytes = b""
    ) -> None:
        self._params = verity_params(algorithm, block_size, salt)
        self._levels = MerkleLevels(self._params)
        self._partial = bytearray()  # data not yet making up a whole block
        self._size = 0

    @property
    def params(self) -> VerityParams:
        return self._params

    @property
    def data_size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        mv = memoryview(data).cast("B")
        self._size += len(mv)
        bs = self._params.block_size
        if self._partial:
            take = min(bs - len(self._partial), len(mv))
            self._partial += mv[:take]
            mv = mv[take:]
            if len(self._partial) < bs:
                return
            self._levels.add(hash_blocks(self._params, bytes(self._partial)))
            self._partial.clear()
        whole = len(mv) - len(mv) % bs
        if whole:
            self._levels.add(hash_blocks(self._params, mv[:whole]))
        self._partial += mv[whole:]

    def add_block_hashes(self, hashes: bytes, data_bytes: int) -> None:
        """Feed level-0 hashes computed elsewhere (e.g. on a thread pool).

        ``data_bytes`` is how much data they cover; only the last call may
        cover a partial (zero-padded) block, and it must not mix with
        :meth:`update`.
        """
        self._check_open()
        if self._partial:
            raise ValueError("add_block_hashes() after update() left a partial block")
        self._levels.add(hashes)
        self._size += data_bytes

    def _check_open(self) -> None:
        # After a zero-padded partial block from add_block_hashes() nothing may
        # follow: the padding would end up inside the data.
        if self._size % self._params.block_size and not self._partial:
            raise ValueError("no more data may follow a partial block given to add_block_hashes()")

    def root_hash(self) -> bytes:
        """The Merkle tree root hash of the data so far (digest_size bytes)."""
        levels = self._levels.copy()
        if self._partial:
            block = bytes(self._partial) + b"\0" * (self._params.block_size - len(self._partial))
            levels.add(hash_blocks(self._params, block))
        return levels.root()

    def digest(self) -> bytes:
        """The fs-verity file digest of the data so far."""
        return file_digest(self._params, self._size, self.root_hash())

    def hexdigest(self) -> str:
        return self.digest().hex()
