"""Digests, verifying streams and the blob cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.errors import DataError, DigestMismatchError, VerificationError
from powernode.oci.cache import BlobCache, write_verified
from powernode.oci.digest import Digest, VerifyingReader, VerifyingWriter
from tests.oci.helpers import blob, files_under

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_digest_known_vector() -> None:
    assert str(Digest.of_bytes(b"")) == EMPTY
    assert Digest.parse(EMPTY).tag_form == "sha256-" + EMPTY[7:]


@pytest.mark.parametrize(
    "text", ["sha256:" + "A" * 64, "sha256:" + "0" * 63, "sha512:" + "0" * 128, " " + EMPTY]
)
def test_digest_rejects(text: str) -> None:
    with pytest.raises(DataError, match="invalid digest"):
        Digest.parse(text)


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_writer_accepts_exactly_its_bytes(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    sink = io.BytesIO()
    w = VerifyingWriter(sink, Digest.of_bytes(data), size=len(data))
    for c in chunks:
        w.write(c)
    assert w.finish() == Digest.of_bytes(data)
    assert sink.getvalue() == data


def test_writer_stops_before_writing_past_size() -> None:
    sink = io.BytesIO()
    w = VerifyingWriter(sink, Digest.of_bytes(b"abc"), size=3)
    w.write(b"ab")
    with pytest.raises(VerificationError, match="more data than the expected size of 3"):
        w.write(b"cd")
    assert sink.getvalue() == b"ab"


def test_writer_cap_without_size() -> None:
    w = VerifyingWriter(io.BytesIO(), Digest.of_bytes(b""), max_size=4)
    with pytest.raises(VerificationError, match="size limit of 4 bytes"):
        w.write(b"12345")


def test_reader_raises_at_eof_on_mismatch() -> None:
    r = VerifyingReader(io.BytesIO(b"abc"), Digest.of_bytes(b"abd"))
    assert r.read(2) == b"ab"
    assert r.read(2) == b"c"
    with pytest.raises(DigestMismatchError, match="blob: digest mismatch"):
        r.read(2)


def test_cache_put_and_has(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = blob(3 << 20, seed=1)
    d = Digest.of_bytes(data)
    assert not cache.has(d)
    path = cache.put_verified(io.BytesIO(data), d, size=len(data))
    assert path == tmp_path / "sha256" / d.hex and path.read_bytes() == data
    assert cache.has(d) and oct(path.stat().st_mode & 0o777) == "0o644"
    src = tmp_path / "src"
    src.write_bytes(b"hello")
    assert cache.put_file(src, Digest.of_bytes(b"hello")).read_bytes() == b"hello"


def test_failed_put_leaves_nothing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    data = blob(100_000)

    def broken() -> object:
        yield data[:50_000]
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        cache.put_verified(broken(), Digest.of_bytes(data))  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="truncated: got 50000 of 100000"):
        cache.put_verified([data[:50_000]], Digest.of_bytes(data), size=len(data))
    with pytest.raises(DigestMismatchError):
        cache.put_verified([data], Digest.of_bytes(b"x"))
    assert files_under(tmp_path / "c") == []


def test_write_verified_keeps_old_file_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    with pytest.raises(DigestMismatchError):
        write_verified(dest, [b"new"], Digest.of_bytes(b"other"))
    assert dest.read_bytes() == b"old" and files_under(tmp_path) == ["f"]


def test_sweep_partials_respects_age(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    (tmp_path / "sha256").mkdir()
    old = tmp_path / "sha256" / ".partial-old"
    new = tmp_path / "sha256" / ".partial-new"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (1000.0, 1000.0))
    os.utime(new, (5000.0, 5000.0))
    assert cache.sweep_partials(older_than=100.0, now=lambda: 5050.0) == 1
    assert cache.partials() == [new]
