"""Nodes and instances: ``/nodes``, ``/node_instances``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import PlainTextResponse

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas import InstanceOut, NodeCreate, NodeOut, ProvisionRequest
from powernode.platform.services import nodes

router = APIRouter(tags=["nodes"])


@router.post("/nodes", status_code=status.HTTP_201_CREATED)
def create_node(body: NodeCreate, state: State, actor: CurrentActor) -> dict[str, NodeOut]:
    with state.unit(actor) as ctx:
        n = nodes.create_node(ctx, body.hostname, body.node_template_id, metadata=body.metadata)
        return {"node": NodeOut.of(n)}


@router.get("/nodes")
def list_nodes(state: State, actor: Reader) -> dict[str, list[NodeOut]]:
    with state.unit(actor) as ctx:
        return {"nodes": [NodeOut.of(n) for n in nodes.list_nodes(ctx)]}


@router.get("/nodes/{node}")
def get_node(node: str, state: State, actor: Reader) -> dict[str, NodeOut]:
    with state.unit(actor) as ctx:
        return {"node": NodeOut.of(nodes.get_node(ctx, node))}


@router.post("/node_instances", status_code=status.HTTP_201_CREATED)
def provision_instance(
    body: ProvisionRequest, state: State, actor: CurrentActor
) -> dict[str, InstanceOut]:
    """Seed 004: ``system_provision_instance({node_id})``."""
    with nodes.undo_on_failure(state.provider) as started, state.unit(actor) as ctx:
        i = nodes.provision_instance(ctx, state.provider, body.node_id, started=started)
        return {"instance": InstanceOut.of(i)}


@router.get("/node_instances")
def list_instances(
    state: State, actor: Reader, node: str | None = None
) -> dict[str, list[InstanceOut]]:
    with state.unit(actor) as ctx:
        return {"instances": [InstanceOut.of(i) for i in nodes.list_instances(ctx, node)]}


@router.get("/node_instances/{instance_id}")
def get_instance(instance_id: str, state: State, actor: Reader) -> dict[str, InstanceOut]:
    with state.unit(actor) as ctx:
        return {"instance": InstanceOut.of(nodes.get_instance(ctx, instance_id))}


@router.post("/node_instances/{instance_id}/terminate")
def terminate_instance(
    instance_id: str, state: State, actor: CurrentActor
) -> dict[str, InstanceOut]:
    with state.unit(actor) as ctx:
        i = nodes.terminate_instance(ctx, state.provider, instance_id)
        return {"instance": InstanceOut.of(i)}


@router.post("/node_instances/{instance_id}/reboot")
def reboot_instance(instance_id: str, state: State, actor: CurrentActor) -> dict[str, InstanceOut]:
    """Power-cycle the instance's machine: the same disks and identity (its persist store
    keeps its modules and certificate); an ``instance.rebooted`` event."""
    with state.unit(actor) as ctx:
        i = nodes.reboot_instance(ctx, state.provider, instance_id)
        return {"instance": InstanceOut.of(i)}


MAX_CONSOLE_TAIL = 1 << 20


@router.get(
    "/node_instances/{instance_id}/console",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
def instance_console(
    instance_id: str,
    state: State,
    actor: Reader,
    tail_bytes: Annotated[int, Query(ge=1, le=MAX_CONSOLE_TAIL)] = 64 * 1024,
) -> PlainTextResponse:
    """The last ``tail_bytes`` of the instance's serial console (kept after terminate)."""
    with state.unit(actor, write=False) as ctx:
        raw = nodes.instance_console(ctx, state.provider, instance_id, tail_bytes)
    return PlainTextResponse(raw.decode(errors="replace"))
