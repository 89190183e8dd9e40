"""Database models (one file per group of nouns), engine/session setup and migrations.

Importing this package registers every model on ``Base.metadata``.
"""

from powernode.platform.db.auth import ApiToken, AuditLogEntry
from powernode.platform.db.base import Base
from powernode.platform.db.catalog import (
    NodeModule,
    NodeModuleCategory,
    NodeModuleVersion,
    PromotionApproval,
    PromotionState,
)
from powernode.platform.db.fleet import DiskImagePublication, FleetEvent, Task, TaskState
from powernode.platform.db.ingest import IngestState, ModuleIngest, WebhookDelivery
from powernode.platform.db.nodeapi import (
    BootstrapToken,
    NodeAgentStatus,
    NodeCertificate,
    NodeRateBucket,
)
from powernode.platform.db.nodes import InstanceStatus, Node, NodeInstance
from powernode.platform.db.nodescripts import NodeScriptRow
from powernode.platform.db.rollouts import Rollout, RolloutState
from powernode.platform.db.supply import (
    OsvAffected,
    OsvRecord,
    PromotionPolicy,
    VersionEvidence,
    VersionFinding,
)
from powernode.platform.db.templates import NodeModuleAssignment, NodeTemplate

__all__ = [
    "ApiToken",
    "AuditLogEntry",
    "Base",
    "BootstrapToken",
    "DiskImagePublication",
    "FleetEvent",
    "IngestState",
    "InstanceStatus",
    "ModuleIngest",
    "Node",
    "NodeAgentStatus",
    "NodeCertificate",
    "NodeInstance",
    "NodeModule",
    "NodeModuleAssignment",
    "NodeModuleCategory",
    "NodeModuleVersion",
    "NodeRateBucket",
    "NodeScriptRow",
    "NodeTemplate",
    "OsvAffected",
    "OsvRecord",
    "PromotionApproval",
    "PromotionPolicy",
    "PromotionState",
    "Rollout",
    "RolloutState",
    "Task",
    "TaskState",
    "VersionEvidence",
    "VersionFinding",
    "WebhookDelivery",
]
