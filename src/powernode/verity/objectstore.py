"""The content-addressed object store that composefs images point into.

An object's name is its fs-verity SHA-256 digest split ``<2hex>/<62hex>``
(shared/notes/COMPOSEFS.md §5.1). The kernel here has no fs-verity, so before
a union is mounted every object an image references is re-hashed in
userspace and compared with its name; on kernels with fs-verity the overlay is
mounted with ``verity=require`` as well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import DigestMismatchError, VerificationError
from powernode.verity.fsverity import fsverity_digest_file

_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{62}$")


def object_name(digest_hex: str) -> str:
    """``"ab/cdef…"`` for a 64-hex-digit fs-verity digest."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest_hex):
        raise VerificationError(f"not a sha256 fs-verity digest: {digest_hex!r}")
    return f"{digest_hex[:2]}/{digest_hex[2:]}"


@dataclass(frozen=True)
class ObjectStore:
    """A directory of objects named by their fs-verity digest."""

    root: Path

    def path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise VerificationError(f"not an object name (want <2hex>/<62hex>): {name!r}")
        return self.root / name

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def verify(self, name: str) -> Path:
        """The object's path once its content matches its name; raises otherwise."""
        path = self.path(name)
        try:
            actual = fsverity_digest_file(path, threads=1).hex()
        except FileNotFoundError as e:
            raise VerificationError(f"object {name} is missing from {self.root}") from e
        except OSError as e:
            raise VerificationError(f"object {name}: cannot read: {e.strerror}") from e
        expected = name.replace("/", "")
        if actual != expected:
            raise DigestMismatchError(f"object {path}", f"sha256:{expected}", f"sha256:{actual}")
        return path

    def verify_all(self, names: Iterable[str], *, threads: int | None = None) -> int:
        """Verify every named object (in parallel); returns how many were checked."""
        unique = sorted(set(names))
        workers = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(self.verify, unique):
                pass
        return len(unique)
