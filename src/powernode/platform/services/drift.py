"""Drift: the desired module set of an instance's template vs what its agent reports.

Seed 004: ``system_drift_report({instance_id})`` → ``{drift: false}`` once
the instance runs what its template asks for. Per module the status is

- ``ok``: running with the desired composefs digest;
- ``missing``: desired, not reported running;
- ``unexpected``: reported running, not desired;
- ``digest_differs``: running, but another digest than the desired version's.

A desired version with no recorded digest (registered by hand) cannot be
checked beyond being present, so present counts as ``ok`` there.
The comparison itself (:func:`compare`) is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select

from powernode.core.resolve import DEFAULT_ALLOWED_STATES
from powernode.platform.db import InstanceStatus, NodeInstance
from powernode.platform.services.context import Ctx
from powernode.platform.services.desired import (
    DesiredSet,
    desired_for,
    desired_set,
    node_states,
)
from powernode.platform.services.nodes import get_instance
from powernode.platform.services.rollouts import held_back
from powernode.platform.services.templates import get_template

Status = Literal["ok", "missing", "unexpected", "digest_differs"]
_ENDED = {InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value}
MAX_INSTANCES = 1000


@dataclass(frozen=True)
class ModuleDrift:
    name: str
    status: Status
    desired_digest: str | None
    running_digest: str | None
    desired_version: str | None


@dataclass(frozen=True)
class DriftReport:
    instance_id: str
    hostname: str
    template_name: str
    instance_status: str
    last_heartbeat_at: datetime | None
    modules: tuple[ModuleDrift, ...]  # sorted by name

    @property
    def drift(self) -> bool:
        return any(m.status != "ok" for m in self.modules)


def compare(
    desired: Mapping[str, tuple[str | None, str]], running: Mapping[str, str]
) -> tuple[ModuleDrift, ...]:
    """``desired``: name → (digest, version); ``running``: name → digest. Sorted by name."""
    out = []
    for name in sorted(set(desired) | set(running)):
        want = desired.get(name)
        have = running.get(name)
        status: Status
        if want is None:
            status = "unexpected"
        elif have is None:
            status = "missing"
        elif want[0] is not None and want[0] != have:
            status = "digest_differs"
        else:
            status = "ok"
        out.append(
            ModuleDrift(
                name=name,
                status=status,
                desired_digest=want[0] if want else None,
                running_digest=have,
                desired_version=want[1] if want else None,
            )
        )
    return tuple(out)


def _report(instance: NodeInstance, desired: DesiredSet) -> DriftReport:
    wanted = {m.name: (m.composefs_digest, m.version_string) for m in desired.modules}
    running = instance.running_module_digests or {}
    return DriftReport(
        instance_id=instance.id,
        hostname=instance.hostname,
        template_name=desired.template_name,
        instance_status=instance.status,
        last_heartbeat_at=instance.last_heartbeat_at,
        modules=compare(wanted, {str(k): str(v) for k, v in running.items()}),
    )


def instance_drift(
    ctx: Ctx, instance_id: str, allowed_states: frozenset[str] | None = None
) -> tuple[DesiredSet, DriftReport]:
    """Drift against ``allowed_states``; by default what the node is served (node_states)."""
    instance = get_instance(ctx, instance_id)
    template = get_template(ctx, instance.template_id)
    if allowed_states is None:
        allowed_states = node_states(instance.node.node_metadata)
    # What this instance is served: a rollout may hold its new version back (rollouts.py).
    desired = desired_for(ctx, template, allowed_states, held_back(ctx, instance))
    return desired, _report(instance, desired)


def template_drift(
    ctx: Ctx, template_ref: str, allowed_states: frozenset[str] = DEFAULT_ALLOWED_STATES
) -> tuple[DesiredSet, list[DriftReport]]:
    """Every instance of the template that is not terminated or failed."""
    desired = desired_set(ctx, template_ref, allowed_states)
    q = (
        select(NodeInstance)
        .where(
            NodeInstance.template_id == desired.template_id,
            NodeInstance.status.not_in(_ENDED),
        )
        .order_by(NodeInstance.hostname, NodeInstance.id)
        .limit(MAX_INSTANCES)
    )
    return desired, [_report(i, desired) for i in ctx.session.scalars(q)]
