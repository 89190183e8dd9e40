"""fs-verity digests against fsverity-utils' `fsverity digest`, byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from powernode.run import run
from powernode.verity.fsverity import (
    CHUNK_SIZE,
    FsVerityHasher,
    format_digest,
    fsverity_digest_file,
)
from tests.conftest import require_tool

pytestmark = pytest.mark.tool


def _tool_digest(path: Path, *options: str) -> str:
    out = run([require_tool("fsverity"), "digest", *options, path]).stdout.decode()
    digest, _, name = out.rstrip("\n").partition(" ")
    assert name == str(path)
    return digest


SIZES = [0, 1, 4095, 4096, 4097, 4096 * 128, 4096 * 128 + 1, CHUNK_SIZE + 4096 * 128 * 2 + 1]


@pytest.mark.parametrize("size", SIZES)
def test_sizes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(size))
    expected = _tool_digest(path)
    assert format_digest(fsverity_digest_file(path)) == expected
    hasher = FsVerityHasher()
    hasher.update(path.read_bytes())
    assert format_digest(hasher.digest()) == expected


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("block_size", [1024, 2048, 4096, 16384, 65536])
@pytest.mark.parametrize("salt", ["", "00", "0123456789abcdef", "ff" * 32], ids=len)
def test_parameters(tmp_path: Path, algorithm: str, block_size: int, salt: str) -> None:
    # 3 levels at 1 KiB/sha512, a partial last block everywhere
    path = tmp_path / "f"
    path.write_bytes(os.urandom(300 * 1024 + 3))
    options = [f"--hash-alg={algorithm}", f"--block-size={block_size}"]
    if salt:
        options.append(f"--salt={salt}")
    got = fsverity_digest_file(
        path, algorithm=algorithm, block_size=block_size, salt=bytes.fromhex(salt), threads=2
    )
    assert format_digest(got, algorithm) == _tool_digest(path, *options)


@pytest.mark.slow
def test_multi_gib_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with path.open("wb") as f:
        f.write(b"head")
        f.seek(2 << 30)
        f.write(b"middle")
        f.truncate((3 << 30) + 1)
    assert format_digest(fsverity_digest_file(path)) == _tool_digest(path)
