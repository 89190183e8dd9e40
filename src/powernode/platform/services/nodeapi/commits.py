"""``POST /node_api/module_versions``: a version a node made (``powernode-agent commit``).

The node built its instance-variety module's changes as a new version, pushed
it and signed it with its own key; it announces it here. The trust policy of
node-made versions (signing/nodecommit.py) is checked in this order, and a
refusal writes nothing:

1. the module exists in the node's account (404) and is of the ``instance``
   variety (403): only an instance's own module is made on a node;
2. it is assigned to the template of the caller's node (403);
3. the statement's signature verifies with the public key of the certificate
   the caller presented — the instance's live one, which the node API's
   authentication already required (services/nodeapi/identity.py): a revoked
   or superseded certificate never gets this far (401), and a signature by any
   other key, another node's included, is refused (403);
4. the version string is SemVer and the manifest's globs are valid (422).

Then, in the one transaction of the request: the version in ``built`` with
``committed_by_instance_id`` (never promoted by this), a fleet event
``module.version_committed`` and an audit entry. The module's row is locked
first (``FOR UPDATE``; SQLite's write unit is ``BEGIN IMMEDIATE``), so two
announcements of one version are serialised: the second finds the first.
The same announcement again (same instance, same digests) is answered with
the recorded version and ``created: false``, writing nothing; a version
string the module has already (another digest, another instance, or a
version not made on a node) is 409.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from powernode.core.priority import Variety
from powernode.errors import DataError, VerificationError
from powernode.platform.db import (
    FleetEvent,
    NodeInstance,
    NodeModule,
    NodeModuleAssignment,
    NodeModuleVersion,
)
from powernode.platform.problems import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)
from powernode.platform.services import audit, catalog
from powernode.platform.services.context import WRITE, Actor, Ctx
from powernode.signing.keys import PublicKey, key_fingerprint
from powernode.signing.nodecommit import CommitStatement

EVENT = "module.version_committed"


@dataclass(frozen=True)
class Recorded:
    version: NodeModuleVersion
    created: bool


def record_commit(
    ctx: Ctx, statement: CommitStatement, signature: str, key: PublicKey, serial: str
) -> Recorded:
    """Check the announcement against the node-made trust policy and record it (see above)."""
    iid = statement.instance_id
    instance = ctx.session.get(NodeInstance, iid, options=[joinedload(NodeInstance.node)])
    if instance is None:
        raise AuthenticationError(f"instance {iid} named by the certificate no longer exists")
    node = instance.node
    name = statement.module
    module = ctx.session.scalar(
        select(NodeModule)
        .where(NodeModule.account == node.account, NodeModule.name == name)
        .with_for_update(of=NodeModule)  # not the joined category (outer join)
    )
    if module is None:
        raise NotFoundError(f"module {name!r} does not exist")
    if module.variety != Variety.INSTANCE.value:
        raise PermissionDeniedError(
            f"module {name!r} is of the {module.variety} variety; only an instance-variety "
            "module's versions are made on a node"
        )
    assigned = ctx.session.scalar(
        select(NodeModuleAssignment.id).where(
            NodeModuleAssignment.template_id == node.template_id,
            NodeModuleAssignment.module_id == module.id,
        )
    )
    if assigned is None:
        raise PermissionDeniedError(
            f"module {name!r} is not assigned to template {node.template.name!r} of instance "
            f"{iid}; a node commits only a module its template runs"
        )
    try:
        statement.verify(key, signature)
    except (VerificationError, DataError) as e:
        raise PermissionDeniedError(
            f"the announcement of {name} {statement.version} is not signed by the key of "
            f"instance {iid}'s certificate (serial {serial}): {e}"
        ) from e
    existing = ctx.session.scalar(
        select(NodeModuleVersion).where(
            NodeModuleVersion.module_id == module.id,
            NodeModuleVersion.version_string == statement.version,
        )
    )
    if existing is not None:
        if (
            existing.committed_by_instance_id == iid
            and existing.composefs_digest == statement.composefs_digest
            and existing.artifact_ref == statement.reference
        ):
            return Recorded(existing, created=False)
        made = (
            f"made by instance {existing.committed_by_instance_id}"
            if existing.committed_by_instance_id
            else "not made on a node"
        )
        raise ConflictError(
            f"module {name!r} already has version {statement.version} ({made}, composefs "
            f"digest {existing.composefs_digest}); versions are immutable, commit a new version",
            version_id=existing.id,
        )
    # The node's actor reads only; recording is the platform's own write, in its account.
    actor = Actor(ctx.actor.name, None, frozenset({WRITE}), node.account)
    writer = Ctx(ctx.session, actor, ctx.now)
    version = catalog.record_ingested_version(  # InvalidInputError: version, manifest globs
        writer,
        name,
        version_string=statement.version,
        verified=catalog.VerifiedFields(
            composefs_digest=statement.composefs_digest,
            artifact_ref=statement.reference,
            fsverity_root_hash=None,
            sbom_ref=None,
        ),
        manifest=dict(statement.manifest),
        file_list=list(statement.file_list),
    )
    # Verified by the node's key, not by the module's cosign policy.
    version.cosign_verified = False
    version.committed_by_instance_id = iid
    fingerprint = key_fingerprint(key)
    detail: dict[str, object] = {
        "module": name,
        "version": statement.version,
        "composefs_digest": statement.composefs_digest,
        "manifest_digest": statement.manifest_digest,
        "reference": statement.reference,
        "instance_id": iid,
        "cert_serial": serial,
        "key_fingerprint": fingerprint,
    }
    ctx.session.add(
        FleetEvent(
            kind=EVENT,
            severity="info",
            node_id=node.id,
            instance_id=iid,
            payload={**detail, "version_id": version.id},
            occurred_at=ctx.now,
        )
    )
    audit.record(
        writer,
        action="module_version.commit",
        target_type="node_module_version",
        target_id=version.id,
        summary=f"instance {iid} committed {name} {statement.version} (built)",
        detail=detail,
    )
    ctx.session.flush()
    return Recorded(version, created=True)
