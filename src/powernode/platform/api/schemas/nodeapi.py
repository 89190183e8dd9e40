"""Bodies of the node API (``/node_api/…``, docs/node-api.md) and its operator endpoints.

Everything here comes from a node or an operator: strings, lists and maps are
bounded. Requests forbid unknown fields, except the heartbeat: a newer agent
may report more about its host, and refusing its heartbeat would hide the
node from the operator (the unknown fields are dropped, not stored).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from powernode.platform.api.patterns import JSON_INTEGER
from powernode.platform.db import FleetEvent, NodeCertificate, Task
from powernode.platform.services.nodeapi.bootstrap_tokens import TokenRow

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Kind = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$", max_length=128)
]
Uuid = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
Pem = Field(min_length=1, max_length=16 * 1024)


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrollIn(In):
    bootstrap_token: str = Field(min_length=1, max_length=4096)
    csr_pem: str = Pem
    # Optional: when given it must be the token's instance (never trusted otherwise).
    instance_id: Uuid | None = None


class EnrollOut(BaseModel):
    instance_id: str
    certificate_pem: str
    ca_pem: str
    not_after: datetime


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    boot_id: str = Field(default="", max_length=64)
    agent_version: str = Field(default="", max_length=64)
    running_module_digests: dict[ModuleName, Digest] = Field(default_factory=dict, max_length=1000)
    mounts: dict[str, object] = Field(default_factory=dict, max_length=64)
    load: list[float] = Field(default_factory=list, max_length=3)
    mem: dict[Annotated[str, StringConstraints(max_length=32)], int] = Field(
        default_factory=dict, max_length=16
    )


class HeartbeatOut(BaseModel):
    server_time: datetime


class LeasedOut(BaseModel):
    id: str
    kind: str
    payload: dict[str, object]
    attempt: int
    lease_expires_at: datetime


class AckIn(In):
    result: dict[str, object] = Field(default_factory=dict)
    attempt: int | None = Field(
        default=None, ge=1, le=1000, description="the attempt the lease answered; checked"
    )


class FailIn(In):
    error: str = Field(default="", max_length=8192)
    retryable: bool = False
    attempt: int | None = Field(
        default=None, ge=1, le=1000, description="the attempt the lease answered; checked"
    )


class OutcomeOut(BaseModel):
    id: str
    state: str


class OutcomeIn(In):
    """One outcome of ``POST /node_api/tasks/outcomes``: an ack or a fail."""

    id: str = Field(min_length=1, max_length=64)
    outcome: Literal["ack", "fail"]
    result: dict[str, object] = Field(default_factory=dict)
    error: str = Field(default="", max_length=8192)
    retryable: bool = False
    attempt: int | None = Field(
        default=None, ge=1, le=1000, description="the attempt the lease answered; checked"
    )


class OutcomesIn(In):
    outcomes: list[OutcomeIn] = Field(min_length=1, max_length=100)


class LeaseIn(In):
    max: int = Field(ge=1, le=100)
    outcomes: list[OutcomeIn] = Field(
        default_factory=list,
        max_length=100,
        description="outcomes of earlier leases, recorded in the lease's transaction "
        "(all or nothing: one refused refuses the lease); one per task",
    )

    @model_validator(mode="after")
    def _one_outcome_per_task(self) -> LeaseIn:
        twice = sorted(i for i, k in Counter(o.id for o in self.outcomes).items() if k > 1)
        if twice:
            raise ValueError(
                f"outcomes: task {', '.join(twice)} reported more than once; a task has "
                "one outcome, send it once"
            )
        return self


class OutcomeAnswer(BaseModel):
    """``status`` 200: recorded (or already final: ``state`` unchanged); 404/409: refused."""

    id: str
    status: int = Field(description="200 recorded or already final; 404, 409 refused")
    state: str | None = None
    detail: str | None = None


class OutcomesOut(BaseModel):
    outcomes: list[OutcomeAnswer]


class LeaseOut(BaseModel):
    tasks: list[LeasedOut]
    outcomes: list[OutcomeAnswer] = Field(
        default_factory=list,
        description="the answer for each outcome the lease carried, in order (absent: none)",
    )


class EventIn(In):
    id: Uuid
    kind: Kind
    severity: Literal["debug", "info", "warning", "error", "critical"]
    occurred_at: AwareDatetime
    payload: dict[str, object] = Field(default_factory=dict)


class EventsIn(In):
    events: list[EventIn] = Field(max_length=500)


class EventsOut(BaseModel):
    accepted: int
    duplicates: int


class RotateIn(In):
    csr_pem: str = Pem


class RotateOut(BaseModel):
    certificate_pem: str
    not_after: datetime


class TrustPolicyOut(BaseModel):
    """A module's trust policy as the agent reads it (agent/modules/trust.py)."""

    cosign_public_key: str | None = None
    cosign_identity_regexp: str | None = None
    cosign_issuer_regexp: str | None = None


class DesiredModuleOut(BaseModel):
    name: str
    composefs_digest: Digest
    effective_priority: int = Field(
        description="(priority, variety) as one integer: higher is stacked above"
    )
    version: str = ""
    reference: str = Field(default="", description="the artifact's reference; empty: none")
    trust_policy: TrustPolicyOut | None = None
    promotion_state: str = ""
    variety: str = ""
    assigned: bool = False
    metadata: dict[str, object] = Field(
        default_factory=dict, description="the assignment's metadata; {} for a dependency"
    )


class InstanceFactsOut(BaseModel):
    """The instance's facts, named by ``${instance.<fact>}`` placeholders."""

    id: str
    hostname: str
    node_id: str
    node_hostname: str
    template: str = ""
    provider: str = ""
    node_metadata: dict[str, object] = Field(default_factory=dict)


class DesiredModulesOut(BaseModel):
    """``GET /node_api/modules``: the desired module set of the caller's instance."""

    modules: list[DesiredModuleOut]
    instance_id: str = ""
    template: str = ""
    allowed_states: list[str] = Field(default_factory=list)
    instance: InstanceFactsOut | None = None
    composition: dict[str, object] | None = Field(  # core.composition.Composition.to_dict
        default=None, description="core.composition.Composition.to_dict; null for an empty set"
    )


class NodeCommitIn(In):
    """A version the node made (``powernode-agent commit``), pushed and signed by its key."""

    module: ModuleName
    version: str = Field(min_length=1, max_length=128)
    composefs_digest: Digest
    manifest_digest: Digest
    reference: str = Field(min_length=1, max_length=1024, description="pinned: repo@sha256:…")
    manifest: dict[str, object] = Field(max_length=256)
    file_list: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(max_length=200_000)
    signature: str = Field(
        min_length=1, max_length=512, description="the node key's, signing/nodecommit.py"
    )


class NodeCommitOut(BaseModel):
    version_id: str
    module: str
    version: str
    promotion_state: str
    committed_by_instance_id: str
    composefs_digest: Digest
    created: bool = Field(description="false: the same announcement was recorded before")


class NodeScriptDocumentOut(BaseModel):
    """A signed NodeScript document (signing/nodescript.py) as the operator registered it."""

    nodescript: dict[str, object]


# --- operator side ----------------------------------------------------------


class BootstrapTokenIn(In):
    # Default: the platform's bootstrap_token_ttl_seconds setting.
    ttl_seconds: Annotated[int, Field(ge=1, le=30 * 86400), JSON_INTEGER] | None = None


class BootstrapTokenOut(BaseModel):
    token: str
    token_id: str
    instance_id: str
    expires_at: datetime


class BootstrapTokenInfo(BaseModel):
    """A bootstrap token without its secret (shown only when it was created)."""

    id: str
    instance_id: str
    hostname: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    state: Literal["live", "used", "expired"]

    @classmethod
    def of(cls, t: TokenRow) -> BootstrapTokenInfo:
        return cls(**asdict(t))


class TaskIn(In):
    kind: Kind
    payload: dict[str, object] = Field(default_factory=dict)
    max_attempts: Annotated[int, Field(ge=1, le=100), JSON_INTEGER] = 3


class TaskOut(BaseModel):
    id: str
    kind: str
    state: str
    instance_id: str | None
    payload: dict[str, object]
    attempts: int
    max_attempts: int
    available_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    result: dict[str, object] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, t: Task) -> TaskOut:
        return cls(
            id=t.id,
            kind=t.kind,
            state=t.state,
            instance_id=t.instance_id,
            payload=t.payload,
            attempts=t.attempts,
            max_attempts=t.max_attempts,
            available_at=t.available_at,
            lease_owner=t.lease_owner,
            lease_expires_at=t.lease_expires_at,
            result=t.result,
            error=t.error,
            created_at=t.created_at,
            finished_at=t.finished_at,
        )


class EventOut(BaseModel):
    id: str
    agent_event_id: str | None
    kind: str
    severity: str
    occurred_at: datetime
    payload: dict[str, object]

    @classmethod
    def of(cls, e: FleetEvent) -> EventOut:
        return cls(
            id=e.id,
            agent_event_id=e.agent_event_id,
            kind=e.kind,
            severity=e.severity,
            occurred_at=e.occurred_at,
            payload=e.payload,
        )


class CertificateOut(BaseModel):
    serial: str
    fingerprint: str
    reason: str
    issued_at: datetime
    not_after: datetime
    revoked_at: datetime | None
    # Whether it may speak for the instance now: "current", "staged" (issued by
    # the last rotation, not used yet), or null (revoked, replaced by a later
    # enrollment or rotation, or the instance ended). Expiry is not checked here.
    live: Literal["current", "staged"] | None = None

    @classmethod
    def of(
        cls, c: NodeCertificate, live: dict[str, Literal["current", "staged"]]
    ) -> CertificateOut:
        return cls(
            serial=c.serial,
            fingerprint=c.fingerprint,
            reason=c.reason,
            issued_at=c.issued_at,
            not_after=c.not_after,
            revoked_at=c.revoked_at,
            live=live.get(c.serial),
        )
