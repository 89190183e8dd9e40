"""Response bodies of the composition preview and the drift reports.

``CompositionOut`` is ``core.composition.Composition.to_dict()`` field for
field, so ``Composition.from_dict`` reads the API's answer back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from powernode.core.composition import Composition
from powernode.platform.services.desired import DesiredModule, DesiredSet
from powernode.platform.services.drift import DriftReport, ModuleDrift


class StackedModuleOut(BaseModel):
    name: str
    priority: int
    variety: str
    parent: str | None
    effective_mask: list[str]


class UnionEntryOut(BaseModel):
    path: str
    kind: Literal["dir", "file"]
    winner: str | None
    shadowed: list[str]
    providers: list[str]


class DroppedOut(BaseModel):
    path: str
    module: str
    reason: Literal["mask", "protected", "takeover"]
    by: str
    pattern: str


class TakeoverOut(BaseModel):
    path: str
    module: str
    parent: str
    pattern: str
    shipped: bool


class CompositionOut(BaseModel):
    modules: list[StackedModuleOut]
    union: list[UnionEntryOut]
    dropped: list[DroppedOut]
    takeovers: list[TakeoverOut]

    @classmethod
    def of(cls, c: Composition) -> CompositionOut:
        return cls.model_validate(c.to_dict())


class DesiredModuleOut(BaseModel):
    name: str
    module_id: str
    version_id: str
    version_string: str
    promotion_state: str
    composefs_digest: str | None
    priority: int
    variety: str
    assigned: bool
    reason: str

    @classmethod
    def of(cls, m: DesiredModule) -> DesiredModuleOut:
        return cls(**m.__dict__)


class TemplateRef(BaseModel):
    id: str
    name: str


class TemplateCompositionOut(BaseModel):
    template: TemplateRef
    allowed_states: list[str]
    modules: list[DesiredModuleOut]
    composition: CompositionOut

    @classmethod
    def of(cls, d: DesiredSet) -> TemplateCompositionOut:
        return cls(
            template=TemplateRef(id=d.template_id, name=d.template_name),
            allowed_states=sorted(d.allowed_states),
            modules=[DesiredModuleOut.of(m) for m in d.modules],
            composition=CompositionOut.of(d.composition),
        )


class ModuleDriftOut(BaseModel):
    name: str
    status: Literal["ok", "missing", "unexpected", "digest_differs"]
    desired_digest: str | None
    running_digest: str | None
    desired_version: str | None

    @classmethod
    def of(cls, m: ModuleDrift) -> ModuleDriftOut:
        return cls(**m.__dict__)


class DriftOut(BaseModel):
    drift: bool
    instance_id: str
    hostname: str
    template_name: str
    instance_status: str
    last_heartbeat_at: datetime | None
    modules: list[ModuleDriftOut]

    @classmethod
    def of(cls, r: DriftReport) -> DriftOut:
        return cls(
            drift=r.drift,
            instance_id=r.instance_id,
            hostname=r.hostname,
            template_name=r.template_name,
            instance_status=r.instance_status,
            last_heartbeat_at=r.last_heartbeat_at,
            modules=[ModuleDriftOut.of(m) for m in r.modules],
        )


class TemplateDriftOut(BaseModel):
    drift: bool
    template: TemplateRef
    allowed_states: list[str]
    desired: list[DesiredModuleOut]
    instances: list[DriftOut]
