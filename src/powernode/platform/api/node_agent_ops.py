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

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.patterns import JSON_INTEGER
from powernode.platform.api.schemas.nodeapi import TaskOut
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


class NodeScriptLimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    memory_bytes: Annotated[int | None, Field(ge=1 << 20, le=1 << 40), JSON_INTEGER] = None
    tasks_max: Annotated[int | None, Field(ge=1, le=100_000), JSON_INTEGER] = None
    cpu_seconds: Annotated[int | None, Field(ge=1, le=86_400), JSON_INTEGER] = None
    output_bytes: Annotated[int | None, Field(ge=0, le=16 << 20), JSON_INTEGER] = None


class NodeScriptIn(BaseModel):
    """A signed NodeScript document (signing/nodescript.py); the same rules as its parser."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    version: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER]
    script: Annotated[str, Field(min_length=1, max_length=256 * 1024)]
    interpreter: Annotated[str, Field(pattern=r"^/[^ ]*$")] = "/bin/sh"
    timeout_seconds: Annotated[int, Field(ge=1, le=86_400), JSON_INTEGER] = 60
    limits: NodeScriptLimitsIn = Field(default_factory=NodeScriptLimitsIn)
    signature: Annotated[str, Field(min_length=1, max_length=4096)]
    key_fingerprint: Annotated[str, Field(min_length=1, max_length=128)]


class NodeScriptRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[int | None, Field(ge=1, le=1_000_000), JSON_INTEGER] = None


def _script_out(row: NodeScriptRow) -> dict[str, object]:
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
def register_nodescript(body: NodeScriptIn, state: State, actor: CurrentActor) -> dict[str, object]:
    """Register a signed NodeScript (signing/nodescript.py); versions of a name only grow."""
    doc = body.model_dump()
    doc["limits"] = {k: v for k, v in doc["limits"].items() if v is not None}
    with state.unit(actor) as ctx:
        return {"nodescript": _script_out(nodescripts.register(ctx, doc))}


@router.get("/nodescripts/{name}")
def get_nodescript(
    name: str,
    state: State,
    actor: Reader,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> dict[str, object]:
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
