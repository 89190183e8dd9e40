"""The task kinds the node commands add to the service: ``agent.rotate``, ``agent.exec``.

``agent.rotate`` is the platform-side rotation proxy's task
(:mod:`powernode.agent.manualrotate`); ``agent.exec`` runs a NodeScript
(:mod:`powernode.agent.nodescripts`).
"""

from __future__ import annotations

from collections.abc import Callable

from powernode.agent.certstore import CertStore, Credentials
from powernode.agent.config import AgentConfig
from powernode.agent.lifecycle import Clock
from powernode.agent.manualrotate import rotate_task
from powernode.agent.nodescripts import exec_task
from powernode.agent.tasks import TaskRegistry
from powernode.agent.transport import NodeClient


def register_node_tasks(
    tasks: TaskRegistry,
    *,
    cfg: AgentConfig,
    store: CertStore,
    creds: Callable[[], Credentials],
    factory: Callable[[Credentials], NodeClient],
    clock: Clock,
) -> None:
    tasks.register("agent.rotate", rotate_task(store, creds, factory, clock.now))
    tasks.register("agent.exec", exec_task(cfg.nodescript_keys_file))
