"""Why a module was not mounted: structured, so the runtime can turn it into an event.

Verification raises :class:`ModuleRefused`, carrying one :class:`Refusal` per
problem found (up to a limit); nothing is mounted when it is raised, and the
union that was serving keeps serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from powernode.errors import DigestMismatchError, PowernodeError, VerificationError

Reason = Literal[
    "image-missing",  # no image for the digest in the store
    "image-unreadable",
    "image-digest",  # the image's fs-verity digest is not the composefs digest asked for
    "image-corrupt",  # not a valid composefs/EROFS image
    "image-inconsistent",  # a file's redirect and metacopy digest disagree, or a bad name
    "object-missing",
    "object-unreadable",
    "object-digest",  # an object's content does not match its fs-verity name
    "pull-failed",
    "signature",  # the artifact's signature does not satisfy the trust policy
    "artifact-digest",  # the pulled artifact is not the composefs digest desired
    "migration",  # a data migration of the upgrade failed (agent/migration.py)
    "placeholder",  # a template of an instance-variety module did not render (render.py)
]

# What to do, per reason: the operator reads these in the event and in `status`.
_ADVICE: dict[str, str] = {
    "image-missing": "pull the module again (powernode-agent sync)",
    "image-unreadable": "check the state directory's disk and permissions",
    "image-digest": "the stored image was altered or is the wrong one: delete it and pull again",
    "image-corrupt": "the image is damaged: delete it and pull again",
    "image-inconsistent": "the image is malformed: rebuild and republish the module",
    "object-missing": "pull the module again; its objects are fetched into the shared store",
    "object-unreadable": "check the state directory's disk and permissions",
    "object-digest": "the object was altered on disk: delete it and pull the module again",
    "pull-failed": "check the registry and the node's network; the next sync retries",
    "signature": "check the module's trust policy and who signed the artifact",
    "artifact-digest": "the registry served a different artifact than the platform expects",
    "migration": "the old version still serves, its state as it was: fix the migration "
    "and publish a new version",
    "placeholder": "set the fact the template names (the instance's, or the assignment's "
    "metadata on the platform), or fix the template and publish a new version",
}


@dataclass(frozen=True)
class Refusal:
    """One reason a module is not mounted, with where and what was expected."""

    module: str
    digest: str  # the composefs digest asked for, "sha256:<hex>"
    reason: Reason
    detail: str
    path: str = ""
    expected: str = ""
    actual: str = ""

    @property
    def advice(self) -> str:
        return _ADVICE.get(self.reason, "")

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        # The digest is unknown when a pull by reference failed before verifying anything.
        who = f"{self.module} {self.digest}" if self.digest else self.module
        return f"{who}: {self.reason}{where}: {self.detail}; {self.advice}"

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "advice": self.advice}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Refusal:  # Any: JSON
        return cls(
            module=str(d.get("module", "")),
            digest=str(d.get("digest", "")),
            reason=d.get("reason", "image-missing"),
            detail=str(d.get("detail", "")),
            path=str(d.get("path", "")),
            expected=str(d.get("expected", "")),
            actual=str(d.get("actual", "")),
        )

    def event(self) -> dict[str, Any]:  # Any: JSON
        """The ``kind``/``severity``/``payload`` of a node event (docs/node-api.md)."""
        # A warning, not an error: the node keeps serving what it served before.
        return {"kind": "module.refused", "severity": "warning", "payload": self.to_dict()}


class ModuleRefused(VerificationError):
    """Modules refused: nothing new was mounted. ``refusals`` says why, per problem."""

    def __init__(self, refusals: Sequence[Refusal], *, more: int = 0) -> None:
        self.refusals = tuple(refusals)
        self.more = more  # problems found beyond the ones listed
        lines = [str(r) for r in self.refusals]
        if more:
            lines.append(f"... and {more} more problem(s)")
        super().__init__("refused to mount:\n" + "\n".join(lines))


def pull_refusal(module: str, digest: str, reference: str, e: PowernodeError) -> Refusal:
    """A failed signature check or pull as a refusal: ``signature`` for a verification
    error, ``artifact-digest`` for content that is not what was asked for, else
    ``pull-failed`` (the registry or the network; the next sync retries)."""
    if isinstance(e, DigestMismatchError):
        return Refusal(module, digest, "artifact-digest", str(e), reference, e.expected, e.actual)
    reason: Reason = "signature" if isinstance(e, VerificationError) else "pull-failed"
    return Refusal(module, digest, reason, str(e), reference)
