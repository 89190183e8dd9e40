"""The agent's module layer: store, verify, mount, atomic restack, attach state, status.

What the CLI (``powernode-agent``) and the runtime call; see docs/agent-modules.md.
"""

from powernode.agent.modules.attach import AttachResult, apply, attach, detach, restore
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import (
    Action,
    DesiredModule,
    PublishPuller,
    Puller,
    SyncReport,
    plan,
    sync,
)
from powernode.agent.modules.refusal import ModuleRefused, Refusal
from powernode.agent.modules.state import ModuleSpec
from powernode.agent.modules.status import ModuleStatus, running_module_digests, status
from powernode.agent.modules.union import teardown
from powernode.agent.modules.verify import Verdict, verify_path
from powernode.node.store import ModuleStore

__all__ = [
    "Action",
    "AttachResult",
    "DesiredModule",
    "ModuleRefused",
    "ModuleSpec",
    "ModuleStatus",
    "ModuleStore",
    "NodeLayout",
    "PublishPuller",
    "Puller",
    "Refusal",
    "SyncReport",
    "Verdict",
    "apply",
    "attach",
    "detach",
    "plan",
    "restore",
    "running_module_digests",
    "status",
    "sync",
    "teardown",
    "verify_path",
]
