"""Values the identity cascade returns: the identity, the trail of attempts, the errors.

Everything here is plain data: frozen dataclasses with a ``to_dict()`` that
gives the JSON shape ``powernode-agent introspect --json`` prints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from powernode.errors import PowernodeError


class Outcome(enum.StrEnum):
    """What one source made of its attempt."""

    FOUND = "found"  # gave a valid identity: the cascade stops here
    SKIPPED = "skipped"  # not tried: disabled, or no cheap local signal for this platform
    ABSENT = "absent"  # tried, and the source holds no identity (file or key missing)
    INVALID = "invalid"  # the source answered with a value we refuse (format, placeholder)
    ERROR = "error"  # could not be read: permission, timeout, HTTP 5xx, connection refused


@dataclass(frozen=True)
class Identity:
    """One instance identifier and where it came from.

    ``instance_id`` is normalised: a lowercase 8-4-4-4-12 UUID for the UUID
    sources, or the provider's own ID (``i-…`` on AWS, a decimal number on
    GCP, DigitalOcean and Hetzner) for cloud metadata sources; ``source``
    names the source (see ``SOURCE_NAMES``) so the platform knows which kind.
    """

    instance_id: str
    source: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"instance_id": self.instance_id, "source": self.source, "detail": self.detail}


@dataclass(frozen=True)
class Attempt:
    """One source's try: its outcome and, in words, why."""

    source: str
    outcome: Outcome
    reason: str
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }

    def __str__(self) -> str:
        return f"{self.source}: {self.outcome.value}: {self.reason}"


@dataclass(frozen=True)
class IdentityTrail:
    """Every attempt the cascade made, in order."""

    attempts: tuple[Attempt, ...] = ()

    def outcome_of(self, source: str) -> Outcome | None:
        for attempt in self.attempts:
            if attempt.source == source:
                return attempt.outcome
        return None

    def reason_of(self, source: str) -> str | None:
        for attempt in self.attempts:
            if attempt.source == source:
                return attempt.reason
        return None

    def to_dict(self) -> list[dict[str, object]]:
        return [a.to_dict() for a in self.attempts]

    def __str__(self) -> str:
        return "\n".join(f"  - {a}" for a in self.attempts)


@dataclass(frozen=True)
class IdentityResult:
    """The winning identity, the trail that led to it, and warnings worth a look."""

    identity: Identity
    trail: IdentityTrail
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "resolved": True,
            "identity": self.identity.to_dict(),
            "trail": self.trail.to_dict(),
            "warnings": list(self.warnings),
        }


class IdentityError(PowernodeError):
    """The node's identity could not be established."""


class UnresolvableIdentityError(IdentityError):
    """Every source was tried and none gave a valid identity; ``trail`` says why each failed."""

    def __init__(self, trail: IdentityTrail) -> None:
        self.trail = trail
        super().__init__(
            "no identity source gave a valid instance ID; tried:\n"
            f"{trail}\n"
            "Fix one source, e.g. boot with `powernode.id=<uuid>` on the kernel command line, "
            "or write `instance_id = <uuid>` into the local identity.cfg."
        )

    def to_dict(self) -> dict[str, object]:
        return {"resolved": False, "identity": None, "trail": self.trail.to_dict()}
