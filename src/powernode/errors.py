"""The one exception tree of powernode.

Every error a user can meet says what was wrong, where (file:line:column,
field, digest) and what to do. Foreign exceptions are wrapped at the seam
with ``raise ... from e``.

::

    PowernodeError
    ├── ConfigError               bad settings or command-line values
    ├── DataError                 untrusted input is wrong (never retry)
    │   ├── ManifestError         manifest.yaml: carries every Problem found
    │   ├── GlobError             a pattern that cannot be compiled
    │   ├── VersionError          a version or constraint that cannot be parsed
    │   ├── CompositionError      modules that cannot be stacked together
    │   ├── ResolutionError       requirements with no solution (the chain why)
    │   ├── SourceTreeError       a tree that cannot be turned into an image
    │   ├── ImageFormatError      a composefs/EROFS image that is corrupt
    │   └── VerificationError     content that does not match its digest/signature
    │       └── DigestMismatchError
    ├── TransportError            network or registry trouble (may be retried)
    ├── MountError                the kernel refused a mount or unmount
    └── CommandError              an external command failed
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass


class PowernodeError(Exception):
    """Root of every error powernode raises on purpose."""


class ConfigError(PowernodeError):
    """Settings or arguments that cannot be used."""


class DataError(PowernodeError):
    """Input that is wrong; retrying will not help."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input document, located as precisely as known."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    path: str  # field path, e.g. "dependencies.requires[2]"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}:" if self.line else f"{self.file}:"
        field = f" {self.path}:" if self.path else ""
        return f"{where}{field} {self.message}"


class ManifestError(DataError):
    """A manifest with one or more problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class GlobError(DataError):
    """A glob pattern that is not valid; ``offset`` is where in it (0-based), when known."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class VersionError(DataError):
    """A version string or version constraint that cannot be parsed."""


class CompositionError(DataError):
    """Modules that cannot be composed; ``conflicts`` names each collision."""

    def __init__(self, message: str, conflicts: list[str] | None = None) -> None:
        self.conflicts = conflicts or []
        super().__init__(message)


class ResolutionError(DataError):
    """Requirements with no solution; the message explains the chain."""


class SourceTreeError(DataError):
    """A source tree that cannot be written as an image."""


class ImageFormatError(DataError):
    """An image that is not a valid composefs/EROFS image."""


class VerificationError(DataError):
    """Content that fails verification."""


class DigestMismatchError(VerificationError):
    """Content whose digest is not the expected one."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")


class TransportError(PowernodeError):
    """Network or remote-service trouble; may succeed when retried."""


class SyscallError(PowernodeError, OSError):
    """A Linux call (``powernode.linux``) failed: ``call`` names it, ``errno`` is the kernel's.

    Also an ``OSError``, so code that matches on ``errno`` keeps working.
    """

    def __init__(self, call: str, err: int, detail: str = "") -> None:
        OSError.__init__(self, err, os.strerror(err))
        self.call = call
        self.detail = detail
        self.err = err

    def __str__(self) -> str:
        what = f"{self.call} {self.detail}" if self.detail else self.call
        return f"{what}: {_errno.errorcode.get(self.err, str(self.err))}: {os.strerror(self.err)}"


class MountError(PowernodeError):
    """A mount could not be made, moved or removed; the message says which and why."""


class MountCallError(MountError, SyscallError):
    """mount(2), umount2(2) or move_mount(2) failed; the message names the call and errno."""


class CommandError(PowernodeError):
    """An external command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-5:]
        super().__init__(
            f"command failed ({returncode}): {' '.join(argv)}"
            + ("\n" + "\n".join(tail) if tail else "")
        )
