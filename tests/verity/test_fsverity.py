"""fs-verity digests against a naive reference written from the spec.

The reference below is deliberately simple (whole data in memory, recursion
over levels, the descriptor assembled field by field) so that it shares no
code path with powernode.verity.fsverity's streaming tree. Known digests
from `fsverity digest` (fsverity-utils 1.5) pin both to the real thing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powernode.errors import ConfigError, DataError
from powernode.verity.fsverity import (
    CHUNK_SIZE,
    FsVerityHasher,
    VerityFileError,
    format_digest,
    fsverity_digest,
    fsverity_digest_file,
)

_ALG_ID = {"sha256": 1, "sha512": 2}
_HASH_INPUT_BLOCK = {"sha256": 64, "sha512": 128}


def reference_digest(
    data: bytes, algorithm: str = "sha256", block_size: int = 4096, salt: bytes = b""
) -> bytes:
    """fsverity.rst "File digest computation", as literally as possible."""
    padded_salt = b""
    if salt:
        unit = _HASH_INPUT_BLOCK[algorithm]
        padded_salt = salt + b"\0" * ((unit - len(salt) % unit) % unit)

    def level_root(level: bytes) -> bytes:
        blocks = [
            level[i : i + block_size].ljust(block_size, b"\0")
            for i in range(0, len(level), block_size)
        ]
        hashes = [hashlib.new(algorithm, padded_salt + b).digest() for b in blocks]
        if len(hashes) == 1:
            return hashes[0]
        return level_root(b"".join(hashes))

    digest_size = hashlib.new(algorithm).digest_size
    root = level_root(data) if data else b"\0" * digest_size
    descriptor = (
        bytes([1, _ALG_ID[algorithm], block_size.bit_length() - 1, len(salt)])
        + b"\0" * 4  # sig_size
        + len(data).to_bytes(8, "little")
        + root.ljust(64, b"\0")
        + salt.ljust(32, b"\0")
        + b"\0" * 144
    )
    assert len(descriptor) == 256
    return hashlib.new(algorithm, descriptor).digest()


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not a secret


# Printed by `fsverity digest` (fsverity-utils 1.5) on these machines.
KNOWN = [
    pytest.param(
        b"",
        {},
        "sha256:3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95",
        id="empty",
    ),
    pytest.param(
        b"hello",
        {},
        "sha256:555b589c26ee43b7a2510e6c67ced9fb3190b6da6e9e683984551f5d77a763de",
        id="hello",
    ),
    pytest.param(
        b"hello",
        {"algorithm": "sha512", "salt": bytes.fromhex("abcd")},
        "sha512:1a55a7615e98a22fb70185674b6329e016b243489a01274bea6ba890276711c6"
        "b11fcee771f7ed556d7318d559938e539910db2399dc57a63d3db42681c3301e",
        id="hello-sha512-salt",
    ),
]


@pytest.mark.parametrize(("data", "kwargs", "expected"), KNOWN)
def test_known_digests(data: bytes, kwargs: dict[str, object], expected: str) -> None:
    alg = str(kwargs.get("algorithm", "sha256"))
    assert format_digest(fsverity_digest(data, **kwargs), alg) == expected  # type: ignore[arg-type]
    assert format_digest(reference_digest(data, **kwargs), alg) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "size", [0, 1, 4095, 4096, 4097, 4096 * 128, 4096 * 128 + 1, 4096 * 129 + 7]
)
def test_sizes_match_reference(size: int) -> None:
    data = _data(size, size)
    assert fsverity_digest(data) == reference_digest(data)


# sha512 in 1 KiB blocks: 16 hashes a block, so levels fill at 16 KiB, 256 KiB, 4 MiB.
@pytest.mark.parametrize("size", [1024, 1025, 16 << 10, (16 << 10) + 1, 256 << 10, (256 << 10) + 1])
def test_level_boundaries_match_reference(size: int) -> None:
    data = _data(size, size)
    expected = reference_digest(data, "sha512", 1024, b"salt")
    assert fsverity_digest(data, algorithm="sha512", block_size=1024, salt=b"salt") == expected


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 300 * 1024),
    seed=st.integers(0, 2**32),
    algorithm=st.sampled_from(["sha256", "sha512"]),
    block_size=st.sampled_from([1024, 2048, 4096]),
    salt=st.binary(max_size=32),
)
def test_random_content_matches_reference(
    size: int, seed: int, algorithm: str, block_size: int, salt: bytes
) -> None:
    # 1 KiB blocks with sha512 hold 16 hashes: 300 KiB makes a 4-level tree.
    data = _data(size, seed)
    expected = reference_digest(data, algorithm, block_size, salt)
    assert fsverity_digest(data, algorithm=algorithm, block_size=block_size, salt=salt) == expected


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 70 * 1024),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.integers(0, 70 * 1024), max_size=8),
    block_size=st.sampled_from([1024, 4096]),
    salt=st.binary(max_size=32),
)
def test_incremental_equals_one_shot(
    size: int, seed: int, cuts: list[int], block_size: int, salt: bytes
) -> None:
    data = _data(size, seed)
    hasher = FsVerityHasher(block_size=block_size, salt=salt)
    start = 0
    for cut in sorted(c for c in cuts if c <= size):
        hasher.update(memoryview(data)[start:cut])
        start = cut
    hasher.update(data[start:])
    assert hasher.data_size == size
    assert hasher.digest() == fsverity_digest(data, block_size=block_size, salt=salt)


def test_digest_does_not_end_hashing() -> None:
    data = _data(3 * 4096 * 128 + 5, 1)
    hasher = FsVerityHasher()
    hasher.update(data[:5000])
    assert hasher.digest() == reference_digest(data[:5000])
    hasher.update(data[5000:])
    assert hasher.digest() == reference_digest(data)
    assert hasher.hexdigest() == reference_digest(data).hex()


@pytest.mark.parametrize(
    "size",
    [0, 1, 4097, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 4096 * 3 + 11],
    ids=["empty", "one", "4097", "chunk", "chunk+1", "2chunks+"],
)
def test_file_threads_agree(tmp_path: Path, size: int) -> None:
    data = _data(size, 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    one = fsverity_digest_file(path, threads=1)
    assert one == fsverity_digest(data)
    for threads in (2, 3, 8):
        assert fsverity_digest_file(path, threads=threads) == one
    assert fsverity_digest_file(str(path), algorithm="sha512", block_size=1024, salt=b"s") == (
        fsverity_digest(data, algorithm="sha512", block_size=1024, salt=b"s")
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(VerityFileError) as info:
        fsverity_digest_file(path)
    err = info.value
    assert isinstance(err, DataError)
    assert isinstance(err, OSError)  # callers handling OS errors still catch it
    assert err.errno == errno.ENOENT
    assert err.filename == str(path)
    assert str(err) == (
        f"{path}: cannot open for reading: No such file or directory; "
        "check that the path exists and is readable"
    )


def test_directory_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(VerityFileError, match=r"not a regular file; fs-verity digests are"):
        fsverity_digest_file(tmp_path)


def test_file_shrinking_while_read_is_an_error(tmp_path: Path) -> None:
    from powernode.verity.fsverity import _ChunkReader
    from powernode.verity.fsverity_tree import verity_params

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10000)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.truncate(path, 5000)
        reader = _ChunkReader(fd, str(path), verity_params())
        with pytest.raises(
            VerityFileError, match=r"changed while being hashed \(ended at offset 5000\)"
        ):
            reader.hash_chunk(bytearray(12288), 0, 10000)
    finally:
        os.close(fd)


def test_file_growing_while_read_is_an_error(tmp_path: Path) -> None:
    from powernode.verity.fsverity import _check_eof

    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(VerityFileError, match=r"\(grew past 50 bytes\); hash it again"):
            _check_eof(fd, str(path), 50)
        _check_eof(fd, str(path), 100)  # exactly at EOF: fine
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "md5"}, "hash algorithm 'md5' is not supported; use one of: sha256, sha512"),
        ({"block_size": 512}, "block size 512 is not valid; use a power of 2 from 1024 to 65536"),
        ({"block_size": 3072}, "block size 3072 is not valid"),
        ({"block_size": 131072}, "block size 131072 is not valid"),
        ({"block_size": True}, "block size True is not valid"),
        ({"salt": b"x" * 33}, "salt is 33 bytes; at most 32 bytes fit"),
        ({"salt": "ab"}, "salt must be bytes, not str"),
    ],
    ids=["alg", "bs512", "bs3072", "bs128k", "bsbool", "salt33", "saltstr"],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    with pytest.raises(ConfigError, match=message):
        fsverity_digest(b"data", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        fsverity_digest_file(path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        FsVerityHasher(**kwargs)  # type: ignore[arg-type]
    assert path.read_bytes() == b"data"


@pytest.mark.parametrize("threads", [0, -1, 65, 1.5])
def test_bad_thread_count(tmp_path: Path, threads: object) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    with pytest.raises(ConfigError, match="threads must be an integer from 1 to 64"):
        fsverity_digest_file(path, threads=threads)  # type: ignore[arg-type]


def test_format_digest() -> None:
    assert format_digest(b"\x01\xab") == "sha256:01ab"
    assert format_digest(b"\xff", "sha512") == "sha512:ff"
    with pytest.raises(ConfigError, match="'md5' is not supported"):
        format_digest(b"\x00", "md5")


def test_worker_error_stops_parallel_read(tmp_path: Path) -> None:
    from powernode.verity.fsverity import _ChunkReader
    from powernode.verity.fsverity_tree import verity_params

    path = tmp_path / "f"
    path.write_bytes(b"y" * (1 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = _ChunkReader(fd, str(path), verity_params())
        # chunks claimed past EOF: as if the file shrank after fstat()
        chunks = [(i << 20, 1 << 20) for i in range(6)]
        results = reader.parallel(chunks, 2)
        first, length = next(results)
        assert (first, length) == (fsverity_block_hashes(b"y" * (1 << 20)), 1 << 20)
        with pytest.raises(
            VerityFileError, match=r"changed while being hashed \(ended at offset 1048576\)"
        ):
            next(results)
    finally:
        os.close(fd)


def fsverity_block_hashes(data: bytes) -> bytes:
    return b"".join(hashlib.sha256(data[i : i + 4096]).digest() for i in range(0, len(data), 4096))


def test_hasher_refuses_data_after_padded_block() -> None:
    hasher = FsVerityHasher()
    hasher.add_block_hashes(hashlib.sha256(b"a".ljust(4096, b"\0")).digest(), 1)
    assert hasher.digest() == fsverity_digest(b"a")
    with pytest.raises(ValueError, match="no more data may follow a partial block"):
        hasher.update(b"b")
    with pytest.raises(ValueError, match="no more data may follow a partial block"):
        hasher.add_block_hashes(b"\0" * 32, 4096)
    assert hasher.digest() == fsverity_digest(b"a")
    other = FsVerityHasher()
    other.update(b"abc")
    with pytest.raises(ValueError, match=r"after update\(\) left a partial block"):
        other.add_block_hashes(b"\0" * 32, 4096)


@pytest.mark.parametrize("size", [0, 1, 64, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1])
@pytest.mark.parametrize("salt", [b"", b"pepper"], ids=["unsalted", "salted"])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_digest_bytes_equals_incremental(size: int, salt: bytes, kind: type) -> None:
    """The one-pass digest (used for every file a composefs build holds in memory),
    whatever buffer type it is handed, equals the incremental hasher's."""
    from powernode.verity.fsverity_tree import digest_bytes, verity_params

    data = _data(size, size)
    hasher = FsVerityHasher(salt=salt)
    hasher.update(data)
    assert digest_bytes(verity_params(salt=salt), kind(data)) == hasher.digest()
