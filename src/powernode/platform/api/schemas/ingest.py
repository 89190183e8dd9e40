"""Bodies of the ingest endpoints: webhooks and the module ingest queue."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from powernode.platform.api.patterns import SEMVER_TAG
from powernode.platform.db import ModuleIngest
from powernode.platform.services.deliveries import DeliveryRow


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(
        min_length=1,
        max_length=128,
        pattern=SEMVER_TAG,
        description="a SemVer tag, e.g. v1.2.3",
    )


class IngestOut(BaseModel):
    id: str
    module_name: str
    tag: str
    source: str
    state: str = Field(description="queued, running, built, rejected or failed")
    reason: str = Field(description="why it was rejected or failed")
    attempts: int
    artifact_ref: str | None
    version_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, j: ModuleIngest) -> IngestOut:
        return cls(
            id=j.id,
            module_name=j.module.name,
            tag=j.tag,
            source=j.source,
            state=j.state,
            reason=j.reason,
            attempts=j.attempts,
            artifact_ref=j.artifact_ref,
            version_id=j.version_id,
            created_at=j.created_at,
            updated_at=j.updated_at,
        )


class WebhookOut(BaseModel):
    delivery_id: str
    module_name: str
    ingest: IngestOut | None
    ignored: str | None = Field(description="why nothing was queued (a branch push)")


class DeliveryOut(BaseModel):
    """One webhook delivery and what became of its tag (its ingest's state)."""

    id: str
    provider: str
    delivery_id: str
    module: str
    event: str
    ref: str
    tag: str | None
    received_at: datetime
    status: str = Field(description="the ingest's state, or ignored (not a tag)")
    attempts: int
    reason: str
    ingest_id: str | None

    @classmethod
    def of(cls, d: DeliveryRow) -> DeliveryOut:
        return cls(**asdict(d))
