"""Content digests and streams that verify them while they flow.

A digest is ``<algorithm>:<encoded>`` as in the OCI image spec
(descriptor.md, "Digests"). Only ``sha256`` is accepted: it is the one
algorithm every registry and the image-layout spec must support, and
accepting others would let an attacker pick a weaker one.

Nothing here holds a whole blob in memory: data passes in chunks through
:class:`VerifyingWriter` / :class:`VerifyingReader`, which count and hash it
and raise the moment the size is exceeded or, at the end, when the digest or
size differs from the expected one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

from powernode.errors import DataError, DigestMismatchError, VerificationError

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough that hashlib overhead is negligible (FACTS.md)

_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated ``sha256:<64 lowercase hex>`` digest."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``sha256:<hex>``; raise :class:`DataError` naming the bad text."""
        if not isinstance(text, str) or _SHA256_RE.fullmatch(text) is None:
            raise DataError(
                f"invalid digest {text!r}: expected 'sha256:' followed by 64 lowercase hex digits"
            )
        algorithm, _, encoded = text.partition(":")
        return cls(algorithm, encoded)

    @classmethod
    def of_bytes(cls, data: bytes) -> Self:
        return cls("sha256", hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, path: Path) -> tuple[Self, int]:
        """Digest and size of a file, read in chunks."""
        h = hashlib.sha256()
        size = 0
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                h.update(chunk)
                size += len(chunk)
        return cls("sha256", h.hexdigest()), size

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def tag_form(self) -> str:
        """``sha256-<hex>``: how cosign-style tags name a digest (tags cannot hold ':')."""
        return f"{self.algorithm}-{self.hex}"


class _Checker:
    """Counts and hashes bytes; enforces the expected size and digest."""

    def __init__(self, what: str, expected: Digest, size: int | None, max_size: int) -> None:
        self.what = what
        self.expected = expected
        self.size = size
        self.limit = size if size is not None else max_size
        self.count = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.count += len(chunk)
        if self.count > self.limit:
            bound = "expected size" if self.size is not None else "size limit"
            raise VerificationError(
                f"{self.what}: more data than the {bound} of {self.limit} bytes "
                f"(digest {self.expected}); the source is corrupt or not this blob"
            )
        self._hash.update(chunk)

    def finish(self) -> Digest:
        if self.size is not None and self.count != self.size:
            raise VerificationError(
                f"{self.what}: truncated: got {self.count} of {self.size} bytes "
                f"(digest {self.expected}); retry the transfer"
            )
        actual = Digest("sha256", self._hash.hexdigest())
        if actual != self.expected:
            raise DigestMismatchError(self.what, str(self.expected), str(actual))
        return actual


class VerifyingWriter:
    """Writes chunks to ``sink`` while hashing; :meth:`finish` checks the result.

    ``size`` is the descriptor's size when known; otherwise ``max_size`` caps
    what an untrusted source may send.
    """

    def __init__(
        self,
        sink: BinaryIO,
        expected: Digest,
        *,
        size: int | None = None,
        max_size: int = 1 << 40,
        what: str = "blob",
    ) -> None:
        self._sink = sink
        self._check = _Checker(what, expected, size, max_size)

    @property
    def count(self) -> int:
        return self._check.count

    def write(self, chunk: bytes) -> None:
        self._check.update(chunk)  # before writing: never write past the limit
        self._sink.write(chunk)

    def finish(self) -> Digest:
        """Raise :class:`VerificationError` unless size and digest match."""
        return self._check.finish()


class VerifyingReader:
    """Reads from ``source`` while hashing; raises at EOF on a mismatch.

    Used when pushing: a local file that does not match the digest it is
    pushed under is reported before the registry sees the last byte.
    """

    def __init__(
        self,
        source: BinaryIO,
        expected: Digest,
        *,
        size: int | None = None,
        max_size: int = 1 << 40,
        what: str = "blob",
    ) -> None:
        self._source = source
        self._check = _Checker(what, expected, size, max_size)
        self._done = False

    def read(self, n: int = CHUNK_SIZE) -> bytes:
        chunk = self._source.read(n)
        if chunk:
            self._check.update(chunk)
        elif not self._done:
            self._done = True
            self._check.finish()
        return chunk


def verify_bytes(what: str, data: bytes, expected: Digest) -> Digest:
    """Return ``expected`` if ``data`` hashes to it, else raise DigestMismatchError."""
    actual = Digest.of_bytes(data)
    if actual != expected:
        raise DigestMismatchError(what, str(expected), str(actual))
    return actual
