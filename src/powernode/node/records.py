"""Every request and answer of the node API (``/node_api/…``, docs/node-api.md) as a record.

The agent sends and reads these; the platform's pydantic schemas
(``platform/api/schemas/nodeapi.py``) describe the same bodies, and
``tests/node/test_contract.py`` proves the two agree field for field against
the OpenAPI document the platform serves. Each record is frozen and typed;
:meth:`Record.from_json` refuses a document with an unknown or a missing
field (or a wrong type, or a broken bound) with a :class:`DataError` naming
the field, and :meth:`Record.to_json` gives the JSON body. Digests are parsed
once, here, into :class:`~powernode.oci.digest.Digest`.

No pydantic: importing it and building schemas cost the agent ~15 MB of
resident memory (bench/bench_agent_rss.py); :mod:`.fields` does what the
records need.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal, Self, TypeVar, dataclass_transform

from powernode.errors import DataError
from powernode.node.fields import JSON, FieldErrors, bounded, build
from powernode.oci.digest import Digest

MAX_PEM = 256 << 10
MAX_TASKS = 100
MAX_OUTCOMES = 100
MAX_EVENTS = 500
MAX_DESIRED_MODULES = 1000
MAX_REFERENCE = 1024
MAX_COMMIT_FILES = 200_000  # the platform's file_list limit (services/catalog.MAX_FILE_LIST)

R = TypeVar("R")


@dataclass_transform(
    frozen_default=True, kw_only_default=True, field_specifiers=(dataclasses.field, bounded)
)
def record(cls: type[R]) -> type[R]:
    """A frozen, keyword-only dataclass (``bounded`` fields as :mod:`.fields` reads them)."""
    return dataclass(frozen=True, kw_only=True)(cls)


class Record:
    """A node API body: built from JSON strictly, written back as JSON."""

    # The OpenAPI schema the platform serves for this body (tests/node/test_contract.py).
    schema: ClassVar[str]

    @classmethod
    def from_json(cls, doc: object, where: str = "") -> Self:
        """The record in ``doc``; DataError naming every unknown, missing or bad field."""
        try:
            return build(cls, doc, extra="forbid")
        except FieldErrors as e:
            raise DataError(f"{where or cls.__name__}: {e}") from e

    def to_json(self) -> dict[str, JSON]:
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _to_json(value: object) -> JSON:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Digest | Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    raise TypeError(f"no JSON form for {type(value).__name__}")  # pragma: no cover


# -- enrollment and certificates ---------------------------------------------------------


@record
class EnrollRequest(Record):
    """``POST /node_api/enroll``: the single-use token and a CSR; ``instance_id`` if known."""

    schema = "EnrollIn"
    bootstrap_token: str = bounded(min_length=1, max_length=4096)
    csr_pem: str = bounded(min_length=1, max_length=16 * 1024)
    instance_id: str | None = None


@record
class EnrollAnswer(Record):
    schema = "EnrollOut"
    instance_id: str = bounded(min_length=1, max_length=128)
    certificate_pem: str = bounded(min_length=1, max_length=MAX_PEM)
    ca_pem: str = bounded(min_length=1, max_length=MAX_PEM)
    not_after: datetime


@record
class RotateRequest(Record):
    """``POST /node_api/certificates/rotate``."""

    schema = "RotateIn"
    csr_pem: str = bounded(min_length=1, max_length=16 * 1024)


@record
class RotateAnswer(Record):
    schema = "RotateOut"
    certificate_pem: str = bounded(min_length=1, max_length=MAX_PEM)
    not_after: datetime


# -- heartbeat -----------------------------------------------------------------------------


@record
class HeartbeatRequest(Record):
    """``POST /node_api/status/heartbeat``: what the node reports about itself."""

    schema = "HeartbeatIn"
    boot_id: str = bounded(default="", max_length=64)
    agent_version: str = bounded(default="", max_length=64)
    # The modules running (or attached), name -> composefs digest: the drift report's input.
    running_module_digests: dict[str, Digest] = dataclasses.field(default_factory=dict)
    # {"generation": int, "mounted": [composefs hex, ...]}: the union being served
    mounts: dict[str, JSON] = dataclasses.field(default_factory=dict)
    load: list[float] = dataclasses.field(default_factory=list)
    mem: dict[str, int] = dataclasses.field(default_factory=dict)


@record
class HeartbeatAnswer(Record):
    schema = "HeartbeatOut"
    server_time: datetime


# -- tasks -------------------------------------------------------------------------------


@record
class LeaseRequest(Record):
    """``POST /node_api/tasks/lease``: up to ``max`` tasks; ``outcomes`` of earlier leases
    ride along, recorded in the lease's transaction (all or nothing, one per task)."""

    schema = "LeaseIn"
    max: int = bounded(ge=1, le=MAX_TASKS)
    outcomes: list[Outcome] = bounded(default_factory=list, max_length=MAX_OUTCOMES)

    def to_json(self) -> dict[str, JSON]:
        doc = super().to_json()
        if not self.outcomes:  # as before: a platform that predates the field takes it
            del doc["outcomes"]
        return doc


@record
class LeasedTask(Record):
    schema = "LeasedOut"
    id: str = bounded(min_length=1, max_length=128)
    kind: str = bounded(min_length=1, max_length=200)
    payload: dict[str, JSON]
    attempt: int = bounded(ge=0)
    lease_expires_at: datetime


@record
class LeaseAnswer(Record):
    schema = "LeaseOut"
    tasks: list[LeasedTask] = bounded(max_length=MAX_TASKS)
    # The answer for each outcome the lease carried (absent when it carried none).
    outcomes: list[OutcomeResult] = bounded(default_factory=list, max_length=MAX_OUTCOMES)


@record
class AckRequest(Record):
    """``POST /node_api/tasks/{id}/ack``; ``attempt`` is the lease's, checked (None: unknown)."""

    schema = "AckIn"
    result: dict[str, JSON] = dataclasses.field(default_factory=dict)
    attempt: int | None = bounded(default=None, ge=1, le=1000)


@record
class FailRequest(Record):
    """``POST /node_api/tasks/{id}/fail``."""

    schema = "FailIn"
    error: str = bounded(default="", max_length=8192)
    retryable: bool = False
    attempt: int | None = bounded(default=None, ge=1, le=1000)


@record
class TaskStateAnswer(Record):
    """The answer of ack and fail: the task's state after it."""

    schema = "OutcomeOut"
    id: str
    state: str


@record
class Outcome(Record):
    """One outcome of ``POST /node_api/tasks/outcomes``: an ack or a fail."""

    schema = "OutcomeIn"
    id: str = bounded(min_length=1, max_length=64)
    outcome: Literal["ack", "fail"]
    result: dict[str, JSON] = dataclasses.field(default_factory=dict)
    error: str = bounded(default="", max_length=8192)
    retryable: bool = False
    attempt: int | None = bounded(default=None, ge=1, le=1000)


@record
class OutcomesRequest(Record):
    schema = "OutcomesIn"
    outcomes: list[Outcome] = bounded(min_length=1, max_length=MAX_OUTCOMES)


@record
class OutcomeResult(Record):
    """``status`` 200: recorded (or already final: ``state`` unchanged); 404/409: refused."""

    schema = "OutcomeAnswer"
    id: str = bounded(min_length=1, max_length=128)
    status: int
    state: str | None = None
    detail: str | None = bounded(default=None, max_length=4096)


@record
class OutcomesAnswer(Record):
    schema = "OutcomesOut"
    outcomes: list[OutcomeResult] = bounded(max_length=MAX_OUTCOMES)


# -- events --------------------------------------------------------------------------------

Severity = Literal["debug", "info", "warning", "error", "critical"]


@record
class Event(Record):
    """One event; ``id`` (a UUID the agent draws) makes a resend harmless."""

    schema = "EventIn"
    id: str = bounded(min_length=36, max_length=36)
    kind: str = bounded(min_length=1, max_length=128)
    severity: Severity
    occurred_at: str = bounded(min_length=1, max_length=64)  # ISO 8601 with a UTC offset
    payload: dict[str, JSON] = dataclasses.field(default_factory=dict)


@record
class EventsRequest(Record):
    """``POST /node_api/events``."""

    schema = "EventsIn"
    events: list[Event] = bounded(max_length=MAX_EVENTS)


@record
class EventsAnswer(Record):
    schema = "EventsOut"
    accepted: int = bounded(ge=0)
    duplicates: int = bounded(ge=0)


# -- desired modules -------------------------------------------------------------------------


@record
class TrustPolicy(Record):
    """A module's trust policy: a cosign public key, or a keyless identity and issuer."""

    schema = "TrustPolicyOut"
    cosign_public_key: str | None = bounded(default=None, max_length=64 << 10)
    cosign_identity_regexp: str | None = bounded(default=None, max_length=4096)
    cosign_issuer_regexp: str | None = bounded(default=None, max_length=4096)


@record
class DesiredModule(Record):
    """One module of ``GET /node_api/modules``: what to pull, verify and stack.

    The platform always sends every field; a desired set written by hand
    (``powernode-agent modules sync --desired FILE``) may leave out those
    with a default.
    """

    schema = "DesiredModuleOut"
    name: str = bounded(min_length=1, max_length=128)
    composefs_digest: Digest
    # One integer carrying (priority, variety): higher is stacked above (core.priority.stack_rank).
    effective_priority: int
    version: str = bounded(default="", max_length=256)
    # "<registry>/<owner>/<name>:<version>" or "…@sha256:<manifest>"; "" when not published.
    reference: str = bounded(default="", max_length=MAX_REFERENCE)
    trust_policy: TrustPolicy | None = None
    promotion_state: str = bounded(default="", max_length=64)
    variety: str = bounded(default="", max_length=64)
    assigned: bool = False
    # The assignment's metadata the operator set (seed 003 step 7); {} for a dependency.
    metadata: dict[str, JSON] = bounded(default_factory=dict, max_length=256)


@record
class InstanceFacts(Record):
    """The calling instance's facts: what ``${instance.<fact>}`` placeholders name
    (agent/placeholders.py)."""

    schema = "InstanceFactsOut"
    id: str = bounded(max_length=128)
    hostname: str = bounded(max_length=256)
    node_id: str = bounded(max_length=128)
    node_hostname: str = bounded(max_length=256)
    template: str = bounded(default="", max_length=256)
    provider: str = bounded(default="", max_length=128)
    node_metadata: dict[str, JSON] = bounded(default_factory=dict, max_length=256)


@record
class DesiredModules(Record):
    """``GET /node_api/modules``: the desired set of the calling node's instance.

    ``composition`` is ``core.composition.Composition.to_dict`` (null for an
    empty set); the agent reads it with ``Composition.from_dict``.
    """

    schema = "DesiredModulesOut"
    modules: list[DesiredModule] = bounded(max_length=MAX_DESIRED_MODULES)
    instance_id: str = bounded(default="", max_length=128)
    template: str = bounded(default="", max_length=256)
    allowed_states: list[str] = bounded(default_factory=list, max_length=16)
    instance: InstanceFacts | None = None
    composition: dict[str, JSON] | None = None


@record
class NodeScriptAnswer(Record):
    """``GET /node_api/nodescripts/{name}``: a signed NodeScript document
    (signing/nodescript.py), verified by the node before anything runs."""

    schema = "NodeScriptDocumentOut"
    nodescript: dict[str, JSON]


# -- node-made versions (powernode-agent commit) -----------------------------------------


@record
class CommitRequest(Record):
    """``POST /node_api/module_versions``: a version the node made and pushed, announced.

    ``signature``: the node key's over the statement of signing/nodecommit.py
    (every other field here, and the instance id of the node's certificate).
    """

    schema = "NodeCommitIn"
    module: str = bounded(min_length=1, max_length=128)
    version: str = bounded(min_length=1, max_length=128)
    composefs_digest: Digest
    manifest_digest: Digest
    reference: str = bounded(min_length=1, max_length=MAX_REFERENCE)
    manifest: dict[str, JSON] = bounded(max_length=256)
    file_list: list[str] = bounded(max_length=MAX_COMMIT_FILES)
    signature: str = bounded(min_length=1, max_length=512)


@record
class CommitAnswer(Record):
    """What the platform recorded: the version, in ``built``, attributed to the instance."""

    schema = "NodeCommitOut"
    version_id: str = bounded(min_length=1, max_length=128)
    module: str = bounded(min_length=1, max_length=128)
    version: str = bounded(min_length=1, max_length=128)
    promotion_state: str = bounded(min_length=1, max_length=64)
    committed_by_instance_id: str = bounded(min_length=1, max_length=128)
    composefs_digest: Digest
    created: bool


# Every record and its method and path: the contract test walks these.
REQUESTS: dict[tuple[str, str], type[Record]] = {
    ("post", "/node_api/enroll"): EnrollRequest,
    ("post", "/node_api/status/heartbeat"): HeartbeatRequest,
    ("post", "/node_api/tasks/lease"): LeaseRequest,
    ("post", "/node_api/tasks/{task_id}/ack"): AckRequest,
    ("post", "/node_api/tasks/{task_id}/fail"): FailRequest,
    ("post", "/node_api/tasks/outcomes"): OutcomesRequest,
    ("post", "/node_api/events"): EventsRequest,
    ("post", "/node_api/certificates/rotate"): RotateRequest,
    ("post", "/node_api/module_versions"): CommitRequest,
}
ANSWERS: dict[tuple[str, str], type[Record]] = {
    ("post", "/node_api/enroll"): EnrollAnswer,
    ("post", "/node_api/status/heartbeat"): HeartbeatAnswer,
    ("post", "/node_api/tasks/lease"): LeaseAnswer,
    ("post", "/node_api/tasks/{task_id}/ack"): TaskStateAnswer,
    ("post", "/node_api/tasks/{task_id}/fail"): TaskStateAnswer,
    ("post", "/node_api/tasks/outcomes"): OutcomesAnswer,
    ("post", "/node_api/events"): EventsAnswer,
    ("post", "/node_api/certificates/rotate"): RotateAnswer,
    ("get", "/node_api/modules"): DesiredModules,
    ("get", "/node_api/nodescripts/{name}"): NodeScriptAnswer,
    ("post", "/node_api/module_versions"): CommitAnswer,
}
