"""Operator endpoints that act on a node's agent: the rotation proxy, NodeScripts.

``POST /node_instances/{id}/certificates/rotate`` (seed 000: "platform-side
POST /node_api/certificates/rotate proxy") enqueues an ``agent.rotate`` task;
the agent rotates on its next lease and the task's result names the old and
new serials. Answers 202 with the task (``GET …/tasks`` follows it).

NodeScripts: ``POST /nodescripts`` registers a signed one (201),
``GET /nodescripts/{name}[?version=N]`` reads it,
``POST /node_instances/{id}/nodescripts/{name}/run`` enqueues it on the
instance as an ``agent.exec`` task (201 with the task).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas_nodeapi import TaskOut
from powernode.platform.db import NodeScriptRow
from powernode.platform.services import nodescripts
from powernode.platform.services.nodeapi import tasks

router = APIRouter(tags=["node API (operator)"])

ROTATE_KIND = "agent.rotate"


@router.post(
    "/node_instances/{instance_id}/certificates/rotate", status_code=status.HTTP_202_ACCEPTED
)
def rotate_certificate(instance_id: str, state: State, actor: CurrentActor) -> dict[str, TaskOut]:
    """Ask the instance's agent to rotate its certificate now (an ``agent.rotate`` task)."""
    with state.unit(actor) as ctx:
        task = tasks.enqueue(ctx, instance_id, ROTATE_KIND, {}, 3)
        return {"task": TaskOut.of(task)}


# -- NodeScripts (services/nodescripts.py) -------------------------------------------------


class NodeScriptRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[int | None, Field(ge=1, le=1_000_000)] = None


def _script_out(row: NodeScriptRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "script_sha256": row.script_sha256,
        "key_fingerprint": row.key_fingerprint,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "document": row.document,
    }


@router.post("/nodescripts", status_code=status.HTTP_201_CREATED)
def register_nodescript(body: dict[str, Any], state: State, actor: CurrentActor) -> dict[str, Any]:
    """Register a signed NodeScript (core/nodescript.py); versions of a name only grow."""
    with state.unit(actor) as ctx:
        return {"nodescript": _script_out(nodescripts.register(ctx, body))}


@router.get("/nodescripts/{name}")
def get_nodescript(
    name: str, state: State, actor: Reader, version: int | None = None
) -> dict[str, Any]:
    """The newest version of the NodeScript, or ``?version=N``."""
    with state.unit(actor, write=False) as ctx:
        return {"nodescript": _script_out(nodescripts.get(ctx, name, version))}


@router.post(
    "/node_instances/{instance_id}/nodescripts/{name}/run", status_code=status.HTTP_201_CREATED
)
def run_nodescript(
    instance_id: str, name: str, body: NodeScriptRunIn, state: State, actor: CurrentActor
) -> dict[str, TaskOut]:
    """Run the NodeScript (newest, or ``version``) on the instance: an ``agent.exec`` task."""
    with state.unit(actor) as ctx:
        task = nodescripts.run(ctx, instance_id, name, body.version)
        return {"task": TaskOut.of(task)}
