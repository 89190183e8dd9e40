"""Operator endpoints that act on a node's agent: the rotation proxy, NodeScripts.

``POST /node_instances/{id}/certificates/rotate`` (seed 000: "platform-side
POST /node_api/certificates/rotate proxy") enqueues an ``agent.rotate`` task;
the agent rotates on its next lease and the task's result names the old and
new serials. Answers 202 with the task (``GET …/tasks`` follows it).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from powernode.platform.api.deps import CurrentActor, State
from powernode.platform.api.schemas_nodeapi import TaskOut
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
