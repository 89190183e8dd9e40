"""``GET /node_api/nodescripts/{name}[?version=N]``: a node fetches a signed NodeScript.

For ``powernode-agent exec NAME`` on the node (the ``agent.exec`` task carries
the document itself). The node verifies the signature before it runs anything;
the platform only serves what the operator registered.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from powernode.platform.api.deps import State
from powernode.platform.api.node_api import Node, _node_actor
from powernode.platform.api.schemas.nodeapi import NodeScriptDocumentOut
from powernode.platform.services import nodescripts

router = APIRouter(tags=["node API"])


@router.get("/nodescripts/{name}")
def node_nodescript(
    name: str,
    state: State,
    node: Node,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> NodeScriptDocumentOut:
    """The signed NodeScript document (newest, or ``version``)."""
    with state.unit(_node_actor(node), write=False) as ctx:
        return NodeScriptDocumentOut(nodescript=nodescripts.get(ctx, name, version).document)
