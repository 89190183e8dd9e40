"""``GET /node_api/modules``: the desired module set of the calling node's instance (issue 7).

The same computation as the composition preview and the drift report
(:func:`powernode.platform.services.desired.desired_for`: assignments
resolved through dependencies, priorities, composition), for the template
the instance runs, in the promotion states the node may run
(:func:`powernode.platform.services.desired.node_states`): ``live`` only,
or ``staging``, ``blessed`` and ``live`` when the node is marked as a test
node (node metadata ``"test": true``, which needs promote-live to set).
Each entry adds what the agent needs to pull and verify it — the artifact
reference and the module's trust policy — as the node's record
:class:`powernode.node.records.DesiredModules` (docs/agent-modules.md), the
composition in ``core.composition.Composition.to_dict`` form.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from powernode.core.priority import Variety, stack_rank
from powernode.errors import DataError
from powernode.node.fields import JSON
from powernode.node.records import DesiredModule, DesiredModules, TrustPolicy
from powernode.oci.digest import Digest
from powernode.platform.db import NodeInstance, NodeModule, NodeModuleVersion
from powernode.platform.problems import AuthenticationError, ConflictError
from powernode.platform.services.context import READ, Actor, Ctx
from powernode.platform.services.desired import desired_for, node_states
from powernode.platform.services.instance_facts import assignment_metadata, instance_facts
from powernode.platform.services.rollouts import held_back


def trust_policy(module: NodeModule) -> TrustPolicy | None:
    """The module's trust policy as the agent reads it (agent/modules/trust.py); None if unset."""
    if module.cosign_public_key:
        return TrustPolicy(cosign_public_key=module.cosign_public_key)
    if module.cosign_identity_regexp and module.cosign_issuer_regexp:
        return TrustPolicy(
            cosign_identity_regexp=module.cosign_identity_regexp,
            cosign_issuer_regexp=module.cosign_issuer_regexp,
        )
    return None


def desired_modules(ctx: Ctx, instance_id: str) -> DesiredModules:
    """The answer of ``GET /node_api/modules`` for ``instance_id`` (taken from its certificate)."""
    # The node (and its template, joined by the model) in the same statement.
    instance = ctx.session.get(NodeInstance, instance_id, options=[joinedload(NodeInstance.node)])
    if instance is None:
        raise AuthenticationError(
            f"instance {instance_id} named by the certificate no longer exists"
        )
    node = instance.node
    states = node_states(node.node_metadata)
    # The desired set is computed in the node's account, with read access only.
    scoped = Ctx(
        ctx.session,
        Actor(f"instance:{instance.id}", None, frozenset({READ}), node.account),
        ctx.now,
    )
    desired = desired_for(scoped, node.template, states, held_back(scoped, instance))
    versions = {
        v.id: v
        for v in ctx.session.scalars(
            # Each version's module (its trust policy) in the same statement: no query per module.
            select(NodeModuleVersion)
            .options(joinedload(NodeModuleVersion.module))
            .where(NodeModuleVersion.id.in_([m.version_id for m in desired.modules]))
        )
    }
    metadata = assignment_metadata(
        ctx.session, desired.template_id, (m.module_id for m in desired.modules)
    )
    entries = []
    for m in desired.modules:
        v = versions[m.version_id]
        try:
            digest = Digest.parse(m.composefs_digest or "")
        except DataError:
            raise ConflictError(
                f"module {m.name} version {m.version_string} has no valid composefs digest "
                f"({m.composefs_digest!r}), so no node can verify it; ingest it again or "
                "demote it",
                module=m.name,
                version=m.version_string,
            ) from None
        entries.append(
            DesiredModule(
                name=m.name,
                version=m.version_string,
                composefs_digest=digest,
                # One integer carrying (priority, variety): the agent stacks by it
                # (core.priority.stack_rank); the operator's number is m.priority.
                effective_priority=stack_rank(m.priority, Variety(m.variety)),
                reference=v.artifact_ref or "",
                trust_policy=trust_policy(v.module),
                promotion_state=m.promotion_state,
                variety=m.variety,
                assigned=m.assigned,
                metadata=cast("dict[str, JSON]", metadata.get(m.module_id, {})),
            )
        )
    return DesiredModules(
        instance_id=instance.id,
        template=desired.template_name,
        allowed_states=sorted(states),
        instance=instance_facts(instance, desired.template_name),
        modules=entries,
        # Nothing to compose for an empty set: null, so an agent with nothing
        # attached has nothing to restack (docs/agent-modules.md: "composition": {…} | null).
        composition=cast("dict[str, JSON]", desired.composition.to_dict()) if entries else None,
    )
