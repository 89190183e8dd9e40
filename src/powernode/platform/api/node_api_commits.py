"""``POST /node_api/module_versions``: a node announces a version it made and pushed.

``powernode-agent commit MODULE --push TARGET`` builds an instance-variety
module's changes, pushes them, signs them with the node's key and calls this;
the platform records the version in ``built``, attributed to the instance
(services/nodeapi/commits.py has the trust policy and the refusals). The key
the signature must verify with is the public key of the client certificate
the caller presented, which authentication already required to be the
instance's live one.
"""

from __future__ import annotations

from typing import Annotated

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends, Response, status

from powernode.platform.api.deps import State
from powernode.platform.api.node_api import Node, _node_actor, client_certificate
from powernode.platform.api.schemas.nodeapi import NodeCommitIn, NodeCommitOut
from powernode.platform.problems import AuthenticationError
from powernode.platform.services.nodeapi import commits
from powernode.signing.keys import PublicKey
from powernode.signing.nodecommit import CommitStatement

router = APIRouter(tags=["node API"])


def _public_key(cert_der: bytes | None) -> PublicKey:
    if cert_der is None:  # authentication refused it already; kept for the type
        raise AuthenticationError("a client certificate is required")
    key = x509.load_der_x509_certificate(cert_der).public_key()
    if not isinstance(key, Ed25519PublicKey):  # verify_peer admits Ed25519 only
        raise AuthenticationError("the client certificate's key is not Ed25519")
    return key


@router.post(
    "/module_versions",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": NodeCommitOut, "description": "recorded before; nothing written"}},
)
def commit_version(
    body: NodeCommitIn,
    state: State,
    node: Node,
    cert_der: Annotated[bytes | None, Depends(client_certificate)],
    response: Response,
) -> NodeCommitOut:
    """A node-made version (signed by the node's key) recorded as ``built``; never promoted."""
    statement = CommitStatement(
        instance_id=node.instance_id,
        module=body.module,
        version=body.version,
        composefs_digest=body.composefs_digest,
        manifest_digest=body.manifest_digest,
        reference=body.reference,
        manifest=body.manifest,
        file_list=body.file_list,
    )
    key = _public_key(cert_der)
    with state.unit(_node_actor(node)) as ctx:
        done = commits.record_commit(ctx, statement, body.signature, key, node.serial)
        v = done.version
        answer = NodeCommitOut(
            version_id=v.id,
            module=body.module,
            version=v.version_string,
            promotion_state=v.promotion_state,
            committed_by_instance_id=v.committed_by_instance_id or "",
            composefs_digest=v.composefs_digest or "",
            created=done.created,
        )
    if not done.created:
        response.status_code = status.HTTP_200_OK
    return answer
