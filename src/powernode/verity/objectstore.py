"""The content-addressed object store that composefs images point into.

An object's name is its fs-verity SHA-256 digest split ``<2hex>/<62hex>``
(shared/notes/COMPOSEFS.md §5.1). The kernel here has no fs-verity, so before
a union is mounted every object an image references is re-hashed in
userspace and compared with its name; on kernels with fs-verity the overlay is
mounted with ``verity=require`` as well.

An object is a regular file. A symlink, fifo or directory under an object
name is refused without being opened: overlayfs would not serve it as file
data, and opening a fifo would block the verifier forever.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import ConfigError, DigestMismatchError, VerificationError
from powernode.verity.fsverity import fsverity_digest_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{62}$")
_MAX_THREADS = 64
_LISTED_FAILURES = 10  # verify_all names this many bad objects, then counts the rest
_REPAIR = "remove it and pull the module again"


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
        """True if a regular file (not a symlink to one) is stored under ``name``."""
        try:
            return stat.S_ISREG(os.lstat(self.path(name)).st_mode)
        except OSError:
            return False

    def verify(self, name: str) -> Path:
        """The object's path once its content matches its name; raises otherwise."""
        path = self.path(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError as e:
            raise VerificationError(
                f"object {name} is missing from {self.root}; pull the module again"
            ) from e
        except OSError as e:
            raise VerificationError(f"object {path}: cannot stat: {e.strerror}") from e
        if not stat.S_ISREG(st.st_mode):
            raise VerificationError(
                f"object {path}: not a regular file (mode {st.st_mode:#o}); {_REPAIR}"
            )
        try:
            actual = fsverity_digest_file(path, threads=1).hex()
        except OSError as e:  # VerityFileError too: it says what failed
            if e.errno == errno.ENOENT:
                raise VerificationError(
                    f"object {name} vanished from {self.root} while it was verified"
                ) from e
            raise VerificationError(f"object {path}: cannot read: {e}") from e
        expected = name.replace("/", "")
        if actual != expected:
            raise DigestMismatchError(
                f"object {path} (content does not match its name; {_REPAIR})",
                f"sha256:{expected}",
                f"sha256:{actual}",
            )
        return path

    def verify_all(self, names: Iterable[str], *, threads: int | None = None) -> int:
        """Verify every named object (in parallel); returns how many were checked.

        Every object is checked even after one fails, so the error names all
        the bad ones at once: one failure is raised as it is, several as one
        VerificationError listing them (in name order) and chained from the first.
        """
        unique = sorted(set(names))
        if threads is None:
            threads = min(8, os.cpu_count() or 1)
        if isinstance(threads, bool) or not 1 <= threads <= _MAX_THREADS:
            raise ConfigError(f"threads must be an integer from 1 to {_MAX_THREADS}, not {threads}")
        with ThreadPoolExecutor(max_workers=min(threads, max(1, len(unique)))) as pool:
            outcomes = list(pool.map(self._outcome, unique))
        failures = [e for e in outcomes if e is not None]
        if len(failures) == 1:
            raise failures[0]
        if failures:
            shown = "; ".join(str(e) for e in failures[:_LISTED_FAILURES])
            more = len(failures) - _LISTED_FAILURES
            tail = f"; and {more} more" if more > 0 else ""
            raise VerificationError(
                f"{len(failures)} of {len(unique)} objects in {self.root} failed "
                f"verification: {shown}{tail}"
            ) from failures[0]
        log.debug("verified %d objects in %s", len(unique), self.root)
        return len(unique)

    def _outcome(self, name: str) -> VerificationError | None:
        try:
            self.verify(name)
        except VerificationError as e:
            return e
        return None
