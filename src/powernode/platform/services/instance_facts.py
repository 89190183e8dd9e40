"""Per-instance customisation in ``GET /node_api/modules`` (seed 003: instance variety,
assignment metadata): the instance's facts and each assigned module's metadata.

Added to the answer (services/nodeapi/modules.py):

- ``"instance"``: ``{"id", "hostname", "node_id", "node_hostname", "template",
  "provider", "node_metadata"}`` — the facts ``${instance.<fact>}``
  placeholders name (agent/placeholders.py);
- per module, ``"metadata"``: the assignment's metadata the operator set
  (``{}`` for a module pulled in as a dependency, or with none).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.node.fields import JSON
from powernode.node.records import InstanceFacts
from powernode.platform.db import NodeInstance, NodeModuleAssignment


def instance_facts(instance: NodeInstance, template_name: str) -> InstanceFacts:
    node = instance.node
    return InstanceFacts(
        id=instance.id,
        hostname=instance.hostname,
        node_id=node.id,
        node_hostname=node.hostname,
        template=template_name,
        provider=instance.provider,
        node_metadata=cast("dict[str, JSON]", dict(node.node_metadata or {})),
    )


def assignment_metadata(
    session: Session, template_id: str, module_ids: Iterable[str]
) -> dict[str, dict[str, object]]:
    """module id -> the metadata of its assignment on the template."""
    ids = list(module_ids)
    if not ids:
        return {}
    q = select(NodeModuleAssignment).where(
        NodeModuleAssignment.template_id == template_id, NodeModuleAssignment.module_id.in_(ids)
    )
    return {a.module_id: dict(a.assignment_metadata or {}) for a in session.scalars(q)}
