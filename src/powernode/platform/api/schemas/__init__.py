"""Request and response bodies of the operator API (OpenAPI is generated from these).

Requests forbid unknown fields (a typo is an error, not a silently ignored
setting) and bound every string and list. Responses use the seeds' envelopes:
``{"module": {...}}``, ``{"versions": [...]}``, ``{"instance": {...}}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from powernode.core.priority import SEEDED_CATEGORIES
from powernode.platform.api import patterns
from powernode.platform.api.patterns import JSON_INTEGER
from powernode.platform.db import (
    AuditLogEntry,
    Node,
    NodeInstance,
    NodeModule,
    NodeModuleAssignment,
    NodeModuleCategory,
    NodeModuleVersion,
    NodeTemplate,
    PromotionApproval,
    PromotionState,
)

# The rules the services enforce, stated here so /openapi.json carries them
# (issue 13 item 9: a schema-valid request must not be refused with 422).
Name = Field(min_length=1, max_length=128)
ModuleName = Field(min_length=1, max_length=128, pattern=patterns.MODULE_NAME)
CategorySlug = Field(
    min_length=1,
    max_length=64,
    json_schema_extra={"enum": [c.slug for c in SEEDED_CATEGORIES]},
    description="one of the seeded categories (GET /node_module_categories)",
)
Text = Field(default="", max_length=4096)
# The bounds inside the optional type: on ``int | None`` pydantic writes them as
# "ge"/"le", which JSON Schema does not know, so /openapi.json stated no bound.
PriorityValue = Annotated[int, Field(ge=0, le=100_000), JSON_INTEGER]


class In(BaseModel):
    """A request body: unknown fields refused; booleans (StrictBool) and integers
    (JsonInt) are what JSON Schema calls them: ``0`` is not ``false``, ``"5"`` not ``5``."""

    model_config = ConfigDict(extra="forbid")


# --- requests ---------------------------------------------------------------


# JSON Schema fragments; pydantic's own JsonDict type is not exported.
Schema = dict[str, Any]  # Any: JSON Schema values of every JSON type


def _both_or_neither(a: str, b: str) -> list[Schema]:
    def given(f: str) -> Schema:
        return {"properties": {f: {"type": "string"}}, "required": [f]}

    return [{"if": given(a), "then": given(b)}, {"if": given(b), "then": given(a)}]


class ModuleCreate(In):
    """Rules across fields, stated in JSON Schema (``allOf``) and enforced by
    services/catalog.py: a ``config`` module names its ``parent_module``, no
    other variety does; keyless trust gives both regexps or neither."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"variety": {"const": "config"}}, "required": ["variety"]},
                    "then": {
                        "properties": {"parent_module": {"type": "string"}},
                        "required": ["parent_module"],
                    },
                    "else": {"properties": {"parent_module": {"type": "null"}}},
                },
                *_both_or_neither("cosign_identity_regexp", "cosign_issuer_regexp"),
            ]
        },
    )

    name: str = ModuleName
    category_slug: str = CategorySlug
    variety: Literal["subscription", "config", "instance"] = "subscription"
    description: str = Text
    parent_module: str | None = Field(default=None, max_length=128, pattern=patterns.MODULE_NAME)
    cosign_identity_regexp: str | None = Field(
        default=None, max_length=1024, json_schema_extra={"format": "regex"}
    )
    cosign_issuer_regexp: str | None = Field(
        default=None, max_length=1024, json_schema_extra={"format": "regex"}
    )
    cosign_public_key: str | None = Field(default=None, max_length=16_384)
    require_approval: StrictBool = False
    gitea_repo_full_name: str | None = Field(default=None, max_length=255)
    github_repo_full_name: str | None = Field(default=None, max_length=255)


class VersionCreate(In):
    """A version announced by hand, with no artifact.

    ``composefs_digest``, ``fsverity_root_hash``, ``cosign_verified``,
    ``artifact_ref`` and ``sbom_ref`` are not accepted (422): only the
    platform's own ingest, having verified the artifact, sets them (issue 13).
    """

    version_string: str = Field(min_length=1, max_length=128, pattern=patterns.SEMVER)
    manifest: dict[str, object] = Field(default_factory=dict)
    file_list: list[str] = Field(default_factory=list, max_length=200_000)


class PercentWave(In):
    percent: Annotated[int, Field(ge=1, le=100), JSON_INTEGER]


class LabelWave(In):
    labels: dict[str, str] = Field(min_length=1, max_length=64, description="node metadata")


class InstanceWave(In):
    instances: list[str] = Field(min_length=1, max_length=100_000)


Seconds = Annotated[int, Field(ge=0, le=2_592_000), JSON_INTEGER]
Count = Annotated[int, Field(ge=0, le=1_000_000), JSON_INTEGER]


class RolloutPolicy(In):
    """docs/rollouts.md; what the schema cannot say (percentages summing to 100, a wave
    selecting at least one instance) is a 409 from services/rollout_policy.py."""

    waves: list[PercentWave | LabelWave | InstanceWave] = Field(min_length=1, max_length=100)
    pause_seconds: Seconds = 0
    soak_seconds: Seconds = 0
    deadline_seconds: Annotated[int, Field(ge=1, le=2_592_000), JSON_INTEGER] = 600
    max_converging: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER] | None = None
    max_failed: Count = 0


class PromoteRequest(In):
    to: PromotionState
    note: str = Text
    rollout: RolloutPolicy | None = Field(
        default=None, description="to live only: go live in waves under this rollout policy"
    )
    rollout_template: str | None = Field(default=None, description="the rollout's one template")


class DemoteRequest(In):
    to: PromotionState | None = None
    note: str = Text


class NoteRequest(In):
    note: str = Text


class AssignRequest(In):
    module_name: str = Name
    metadata: dict[str, object] = Field(default_factory=dict)
    effective_priority: PriorityValue | None = None
    rollout: RolloutPolicy | None = Field(
        default=None, description="the template's instances get the module in these waves"
    )


class AssignmentUpdate(In):
    """Fields left out are unchanged; ``effective_priority: null`` clears the override."""

    effective_priority: PriorityValue | None = None
    metadata: dict[str, object] | None = None


class NodeCreate(In):
    hostname: str = Field(min_length=1, max_length=253, pattern=patterns.HOSTNAME)
    node_template_id: str = Field(min_length=1, max_length=128, description="id or name")
    metadata: dict[str, object] = Field(default_factory=dict)


class ProvisionRequest(In):
    node_id: str = Field(min_length=1, max_length=253, description="id or hostname")


# --- responses --------------------------------------------------------------


class CategoryOut(BaseModel):
    id: str
    slug: str
    name: str
    position: int

    @classmethod
    def of(cls, c: NodeModuleCategory) -> CategoryOut:
        return cls(id=c.id, slug=c.slug, name=c.name, position=c.position)


class ModuleOut(BaseModel):
    id: str
    account: str
    name: str
    description: str
    category_slug: str
    variety: str
    parent_module: str | None
    cosign_identity_regexp: str | None
    cosign_issuer_regexp: str | None
    cosign_public_key: str | None
    require_approval: bool
    gitea_repo_full_name: str | None
    github_repo_full_name: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, m: NodeModule) -> ModuleOut:
        return cls(
            id=m.id,
            account=m.account,
            name=m.name,
            description=m.description,
            category_slug=m.category.slug,
            variety=m.variety,
            parent_module=m.parent_module.name if m.parent_module else None,
            cosign_identity_regexp=m.cosign_identity_regexp,
            cosign_issuer_regexp=m.cosign_issuer_regexp,
            cosign_public_key=m.cosign_public_key,
            require_approval=m.require_approval,
            gitea_repo_full_name=m.gitea_repo_full_name,
            github_repo_full_name=m.github_repo_full_name,
            created_at=m.created_at,
            updated_at=m.updated_at,
        )


class ModuleCreatedOut(ModuleOut):
    webhook_secret: str = Field(description="shown once; store it as POWERNODE_WEBHOOK_SECRET")


class VersionOut(BaseModel):
    id: str
    module_name: str
    version_string: str
    promotion_state: str
    composefs_digest: str | None
    fsverity_root_hash: str | None
    cosign_verified: bool
    artifact_ref: str | None
    sbom_ref: str | None
    file_count: int
    created_at: datetime
    promoted_at: datetime | None
    committed_by_instance_id: str | None = Field(
        default=None, description="the instance that made it (powernode-agent commit); else null"
    )

    @classmethod
    def of(cls, v: NodeModuleVersion) -> VersionOut:
        return cls(
            id=v.id,
            module_name=v.module.name,
            version_string=v.version_string,
            promotion_state=v.promotion_state,
            composefs_digest=v.composefs_digest,
            fsverity_root_hash=v.fsverity_root_hash,
            cosign_verified=v.cosign_verified,
            artifact_ref=v.artifact_ref,
            sbom_ref=v.sbom_ref,
            file_count=len(v.file_list),
            created_at=v.created_at,
            promoted_at=v.promoted_at,
            committed_by_instance_id=v.committed_by_instance_id,
        )


class ApprovalOut(BaseModel):
    id: str
    version_id: str
    to_state: str
    approved_by: str
    note: str
    approved_at: datetime
    used_at: datetime | None

    @classmethod
    def of(cls, a: PromotionApproval) -> ApprovalOut:
        return cls(
            id=a.id,
            version_id=a.version_id,
            to_state=a.to_state,
            approved_by=a.approved_by,
            note=a.note,
            approved_at=a.approved_at,
            used_at=a.used_at,
        )


class AssignmentOut(BaseModel):
    id: str
    template_id: str
    template_name: str
    module_id: str
    module_name: str
    priority: int
    effective_priority: int | None
    resolved_priority: int = Field(description="effective_priority if set, else priority")
    metadata: dict[str, object]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, a: NodeModuleAssignment) -> AssignmentOut:
        return cls(
            id=a.id,
            template_id=a.template_id,
            template_name=a.template.name,
            module_id=a.module_id,
            module_name=a.module.name,
            priority=a.priority,
            effective_priority=a.effective_priority,
            resolved_priority=a.effective_priority
            if a.effective_priority is not None
            else a.priority,
            metadata=a.assignment_metadata,
            created_at=a.created_at,
            updated_at=a.updated_at,
        )


class TemplateOut(BaseModel):
    id: str
    name: str
    description: str
    created_at: datetime

    @classmethod
    def of(cls, t: NodeTemplate) -> TemplateOut:
        return cls(id=t.id, name=t.name, description=t.description, created_at=t.created_at)


class TemplateDetailOut(TemplateOut):
    assignments: list[AssignmentOut]


class NodeOut(BaseModel):
    id: str
    hostname: str
    template_id: str
    template_name: str
    metadata: dict[str, object]
    created_at: datetime

    @classmethod
    def of(cls, n: Node) -> NodeOut:
        return cls(
            id=n.id,
            hostname=n.hostname,
            template_id=n.template_id,
            template_name=n.template.name,
            metadata=n.node_metadata,
            created_at=n.created_at,
        )


class InstanceOut(BaseModel):
    id: str
    node_id: str
    hostname: str
    template_id: str
    status: str
    provider: str
    provider_ref: str | None
    running_module_digests: dict[str, str]
    last_heartbeat_at: datetime | None
    created_at: datetime
    terminated_at: datetime | None

    @classmethod
    def of(cls, i: NodeInstance) -> InstanceOut:
        return cls(
            id=i.id,
            node_id=i.node_id,
            hostname=i.hostname,
            template_id=i.template_id,
            status=i.status,
            provider=i.provider,
            provider_ref=i.provider_ref,
            running_module_digests=i.running_module_digests,
            last_heartbeat_at=i.last_heartbeat_at,
            created_at=i.created_at,
            terminated_at=i.terminated_at,
        )


class AuditOut(BaseModel):
    id: str
    at: datetime
    actor: str
    token_id: str | None
    action: str
    target_type: str
    target_id: str | None
    summary: str
    detail: dict[str, object]

    @classmethod
    def of(cls, e: AuditLogEntry) -> AuditOut:
        return cls(
            id=e.id,
            at=e.at,
            actor=e.actor,
            token_id=e.token_id,
            action=e.action,
            target_type=e.target_type,
            target_id=e.target_id,
            summary=e.summary,
            detail=e.detail,
        )
