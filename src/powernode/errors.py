"""The one exception tree of powernode.

Every error a user can meet says what was wrong, where (file:line:column,
field, digest) and what to do. Foreign exceptions are wrapped at the seam
with ``raise ... from e``.

The tree below is every public exception class of the package; a class
outside ``errors.py`` carries its module (under ``powernode.``). A class
that is also a builtin error for its callers (ValueError, OSError) says so.
``tests/test_errors_tree.py`` checks the drawing against the classes.

::

    PowernodeError
    ├── ApiError (client)                             the platform refused an operator call
    │   └── OperatorError (demo.operator)             the demo operator's call failed
    ├── BootError (agent.boot)                        the first boot cannot go on (exit 3)
    ├── CommandError                                  an external command failed
    ├── ConfigError                                   bad settings or command-line values
    │   ├── SigningSetupError (signing.errors)        signing cannot start
    │   └── WrongPassphraseError (signing.errors)     not the key's passphrase
    ├── DataError                                     untrusted input is wrong (never retry)
    │   ├── BuildInputError (supply.build_provenance)  a build directory provenance cannot describe
    │   ├── CompositionError                          modules that cannot be stacked
    │   ├── CvssError (supply.cvss)                   a CVSS vector that cannot be scored
    │   ├── EnvelopeError (supply.dsse)               not a DSSE envelope
    │   ├── FeedError (supply.osv)                    an OSV feed that cannot be read
    │   ├── FieldErrors (node.fields)                 fields that do not fit (also ValueError)
    │   ├── GlobError                                 a pattern that cannot be compiled
    │   ├── ImageFormatError                          a corrupt composefs/EROFS image
    │   ├── InvalidIdentifier (agent.identity.validate)  not a node ID (also ValueError)
    │   ├── KeyFormatError (signing.errors)           a key file that cannot be parsed
    │   ├── ManifestError                             manifest.yaml: every Problem found
    │   ├── NotFoundError (oci.errors)                no such manifest, blob or tag
    │   ├── PlatformRefused (agent.transport)         the platform refused a request
    │   ├── PolicyError (supply.policy)               a promotion policy that does not validate
    │   ├── ProvenanceError (supply.provenance)       not an in-toto SLSA statement
    │   ├── ResolutionError                           requirements with no solution
    │   ├── SbomError (supply.sbom)                   an SBOM that does not validate
    │   ├── SbomError (supply.sbom_read)              an SBOM that cannot be read
    │   ├── SourceTreeError                           a tree that cannot be an image
    │   ├── VerificationError                         not its digest or signature
    │   │   ├── CertificateError (signing.errors)     a certificate not valid
    │   │   ├── DigestMismatchError
    │   │   ├── IdentityMismatchError (signing.errors)  a signer the policy does not allow
    │   │   ├── ModuleRefused (agent.modules.refusal)  the agent refuses a module
    │   │   ├── NoSignaturesError (signing.errors)    no signature to verify
    │   │   ├── PayloadError (signing.errors)         a payload that cannot be read
    │   │   ├── PayloadMismatchError (signing.errors)  signed for other content
    │   │   ├── PlatformUntrusted (agent.transport)   the platform's TLS does not chain
    │   │   ├── SignatureInvalidError (signing.errors)  a signature that fails
    │   │   └── TimestampError (signing.errors)       no trusted signing time
    │   ├── VerityFileError (verity.fsverity)         cannot hash a file (also OSError)
    │   ├── VersionError                              a version that cannot be parsed
    │   └── VexError (supply.vex)                     not an OpenVEX document
    ├── DemoStepError (demo.steps)                    a step of the demo failed
    ├── DiskRefused (agent.volumes)                   a disk holds what volume-setup did not make
    ├── DriftError (demo.tutorial_node)               the node is not as the text says
    ├── IdentityError (agent.identity.model)          the node has no usable identity
    │   ├── IdentityFileError (agent.identity.local)  the identity file is unusable
    │   └── UnresolvableIdentityError (agent.identity.model)  no identity source answered
    ├── IngestError (demo.fleet)                      a fleet file that cannot be loaded
    ├── Level0Failure (verity.fsverity_procs)         fs-verity level 0 not computed
    ├── Login (platform.ui.core)                      the console has no usable session
    ├── MigrationFailed (agent.migration)             a data migration failed; old version kept
    ├── MountError                                    a mount not made, moved or removed
    │   └── MountCallError                            a mount call (also SyscallError)
    ├── PlatformError (platform.problems)             an RFC 9457 problem answer
    │   ├── AuthenticationError (platform.problems)   401
    │   ├── BusyError (platform.problems)             503, retry later
    │   ├── ConflictError (platform.problems)         409
    │   │   ├── PolicyMismatchError (platform.services.rollout_policy)  too few nodes for it
    │   │   ├── PolicyRefusedError (platform.services.evidence)  a promotion policy refused
    │   │   ├── RolloutStateError (platform.services.rollouts)  not allowed in the rollout's state
    │   │   ├── ModuleInUseError (platform.services.catalog)  a module a node runs
    │   │   ├── ReplayError (platform.services.webhooks)  a delivery seen before
    │   │   ├── TransitionError (platform.problems)   not allowed from this state
    │   │   └── UnresolvableError (platform.services.desired)  no solution
    │   ├── InvalidInputError (platform.problems)     400/422
    │   ├── NotFoundError (platform.problems)         404
    │   ├── PayloadTooLargeError (platform.problems)  413
    │   ├── PermissionDeniedError (platform.problems)  403
    │   │   └── ApprovalRequiredError (platform.problems)  needs a second approval
    │   ├── ProviderError (platform.problems)         502, the instance provider failed
    │   └── RateLimitedError (platform.problems)      429
    ├── SourceMiss (agent.identity.source)            an identity source had no answer
    │   └── ProbeTimeout (agent.identity.metadata_http)  no answer in time
    ├── SyscallError                                  a Linux call failed (also OSError)
    ├── TaskError (agent.tasks)                       a task handler fails its task
    └── TransportError                                network trouble (may be retried)
        ├── AuthError (oci.errors)                    credentials refused
        ├── PlatformUnreachable (agent.transport)     the agent cannot reach it
        ├── PlatformUnreachableError (client)         the operator cannot reach it
        ├── RangeNotSupportedError (oci.errors)       no byte ranges served
        └── UploadInterruptedError (oci.errors)       a blob upload broke off

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

    def __reduce__(self) -> tuple[type[SyscallError], tuple[str, int, str]]:
        # OSError pickles its (errno, strerror) args; this class is built from these
        return (type(self), (self.call, self.err, self.detail))

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
