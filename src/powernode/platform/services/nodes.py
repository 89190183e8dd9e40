"""Nodes (what the operator wants to run) and their instances (what runs)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import select

from powernode.core.priority import Variety, stack_rank
from powernode.platform.db import FleetEvent, InstanceStatus, Node, NodeInstance
from powernode.platform.problems import ConflictError, InvalidInputError, NotFoundError
from powernode.platform.services import audit
from powernode.platform.services.context import PROMOTE_LIVE, WRITE, Ctx
from powernode.platform.services.desired import (
    TEST_NODE_KEY,
    desired_for,
    is_test_node,
    node_states,
)
from powernode.platform.services.providers import InstanceProvider, ProvisionRequest
from powernode.platform.services.templates import get_template

if TYPE_CHECKING:
    from powernode.platform.services.boot_set import BootModule

log = logging.getLogger(__name__)

# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ENDED = frozenset({InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value})


def check_hostname(hostname: str) -> str:
    if len(hostname) > 253 or not all(_LABEL.match(x) for x in hostname.split(".")):
        raise InvalidInputError(
            f"hostname {hostname!r} is not an RFC 1123 host name: lower-case letters, "
            "digits and inner '-' in dot-separated labels of 1-63 characters",
            field="hostname",
        )
    return hostname


def _event(
    ctx: Ctx, kind: str, node: Node, instance: NodeInstance | None, **payload: object
) -> None:
    ctx.session.add(
        FleetEvent(
            kind=kind,
            node_id=node.id,
            instance_id=instance.id if instance else None,
            payload=payload,
            occurred_at=ctx.now,
        )
    )


def create_node(
    ctx: Ctx, hostname: str, template_ref: str, *, metadata: dict[str, object] | None = None
) -> Node:
    ctx.actor.require(WRITE, "creating a node")
    if is_test_node(metadata):
        # A test node runs staging and blessed versions (services/desired.py):
        # marking one is putting versions that are not live on a machine.
        ctx.actor.require(PROMOTE_LIVE, f"creating a test node (metadata {TEST_NODE_KEY}: true)")
    check_hostname(hostname)
    template = get_template(ctx, template_ref)
    dup = ctx.session.scalar(
        select(Node.id).where(Node.account == ctx.actor.account, Node.hostname == hostname)
    )
    if dup is not None:
        raise ConflictError(f"a node named {hostname!r} already exists ({dup})", node_id=dup)
    node = Node(
        account=ctx.actor.account,
        hostname=hostname,
        template=template,
        node_metadata=metadata or {},
        created_at=ctx.now,
    )
    ctx.session.add(node)
    ctx.session.flush()
    _event(ctx, "node.created", node, None, hostname=hostname, template=template.name)
    audit.record(
        ctx,
        action="node.create",
        target_type="node",
        target_id=node.id,
        summary=f"created node {hostname} from template {template.name}",
        detail={"hostname": hostname, "template": template.name},
    )
    return node


def list_nodes(ctx: Ctx) -> list[Node]:
    q = select(Node).where(Node.account == ctx.actor.account).order_by(Node.hostname)
    return list(ctx.session.scalars(q).unique())


def get_node(ctx: Ctx, ref: str) -> Node:
    """A node by id or hostname."""
    q = select(Node).where(
        Node.account == ctx.actor.account, (Node.id == ref) | (Node.hostname == ref)
    )
    node = ctx.session.scalar(q)
    if node is None:
        raise NotFoundError(
            f"node {ref!r} not found (by id or hostname); list nodes with: "
            "powernode system list-nodes"
        )
    return node


def provision_instance(
    ctx: Ctx, provider: InstanceProvider, node_ref: str, *, started: list[str] | None = None
) -> NodeInstance:
    """Ask ``provider`` for a machine for the node; one live instance per node.

    The machine's ref is appended to ``started`` as soon as the provider answers
    (``undo_on_failure`` terminates it if the unit then fails).
    """
    ctx.actor.require(WRITE, "provisioning an instance")
    node = get_node(ctx, node_ref)
    for other in node.instances:
        if other.status not in _ENDED:
            raise ConflictError(
                f"node {node.hostname!r} already has instance {other.id} ({other.status}); "
                "terminate it first",
                instance_id=other.id,
            )
    instance = NodeInstance(
        node=node,
        hostname=node.hostname,
        template_id=node.template_id,
        status=InstanceStatus.PROVISIONING.value,
        provider=provider.name,
        running_module_digests={},
        created_at=ctx.now,
    )
    ctx.session.add(instance)
    ctx.session.flush()
    # The provider is called last, after every check: a refused request
    # must not leave a machine behind.
    token = None
    ttl = provider.bootstrap_ttl
    if ttl is not None:
        # The seed bundle's single-use token, minted by the one token service; the
        # import is here because enroll.py builds on this module (get_instance).
        from powernode.platform.services.nodeapi import enroll  # noqa: PLC0415

        token = enroll.create_bootstrap_token(ctx, instance.id, ttl)[1]
    instance.provider_ref = provider.provision(
        ProvisionRequest(
            instance.id,
            node.id,
            node.hostname,
            node.template.name,
            token,
            first_module_set(ctx, node) if token is not None else (),
        )
    )
    if started is not None:
        started.append(instance.provider_ref)
    _event(ctx, "instance.provisioning", node, instance, provider=provider.name)
    audit.record(
        ctx,
        action="instance.provision",
        target_type="node_instance",
        target_id=instance.id,
        summary=f"provisioned an instance of {node.hostname} with {provider.name}",
        detail={"node": node.hostname, "provider": provider.name, "ref": instance.provider_ref},
    )
    return instance


@contextmanager
def undo_on_failure(provider: InstanceProvider) -> Iterator[list[str]]:
    """Around a unit that provisions: when the unit fails after the provider started a
    machine (its commit, say), the machines whose refs were appended are terminated, so
    none outlives its rolled-back row. Enter it before the unit::

        with nodes.undo_on_failure(provider) as started, state.unit(actor) as ctx:
            nodes.provision_instance(ctx, provider, node, started=started)
    """
    started: list[str] = []
    try:
        yield started
    except BaseException:
        for ref in started:
            try:
                provider.terminate(ref)
            except Exception:
                log.exception("could not terminate %s after a failed provision", ref)
        raise


def get_instance(ctx: Ctx, instance_id: str) -> NodeInstance:
    instance = ctx.session.get(NodeInstance, instance_id)
    if instance is None or instance.node.account != ctx.actor.account:
        raise NotFoundError(f"instance {instance_id!r} not found", instance_id=instance_id)
    return instance


def list_instances(ctx: Ctx, node_ref: str | None = None) -> list[NodeInstance]:
    q = select(NodeInstance).join(NodeInstance.node).where(Node.account == ctx.actor.account)
    if node_ref is not None:
        q = q.where(NodeInstance.node_id == get_node(ctx, node_ref).id)
    return list(ctx.session.scalars(q.order_by(NodeInstance.created_at, NodeInstance.id)))


def terminate_instance(ctx: Ctx, provider: InstanceProvider, instance_id: str) -> NodeInstance:
    ctx.actor.require(WRITE, "terminating an instance")
    instance = get_instance(ctx, instance_id)
    if instance.status in _ENDED:
        raise ConflictError(
            f"instance {instance_id} is already {instance.status}", status_now=instance.status
        )
    if instance.provider != provider.name:
        raise ConflictError(
            f"instance {instance_id} was provisioned by provider {instance.provider!r}, "
            f"but this platform runs {provider.name!r}; terminate it there"
        )
    if instance.provider_ref:
        provider.terminate(instance.provider_ref)
    before = instance.status
    instance.status = InstanceStatus.TERMINATED.value
    instance.terminated_at = ctx.now
    _event(ctx, "instance.terminated", instance.node, instance, previous_status=before)
    audit.record(
        ctx,
        action="instance.terminate",
        target_type="node_instance",
        target_id=instance.id,
        summary=f"terminated instance {instance.id} of {instance.hostname}",
        detail={"previous_status": before},
    )
    return instance


def reboot_instance(ctx: Ctx, provider: InstanceProvider, instance_id: str) -> NodeInstance:
    """Power-cycle the instance's machine (same disks, same identity); audited, an event."""
    ctx.actor.require(WRITE, "rebooting an instance")
    instance = get_instance(ctx, instance_id)
    if instance.status in _ENDED:
        raise ConflictError(
            f"instance {instance_id} is {instance.status}: nothing to reboot",
            status_now=instance.status,
        )
    if instance.provider != provider.name or not instance.provider_ref:
        raise ConflictError(
            f"instance {instance_id} was provisioned by provider {instance.provider!r}, "
            f"but this platform runs {provider.name!r}; reboot it there"
        )
    provider.reboot(instance.provider_ref)
    _event(ctx, "instance.rebooted", instance.node, instance, status=instance.status)
    audit.record(
        ctx,
        action="instance.reboot",
        target_type="node_instance",
        target_id=instance.id,
        summary=f"rebooted instance {instance.id} of {instance.hostname} (power cycle)",
        detail={},
    )
    return instance


def instance_console(
    ctx: Ctx, provider: InstanceProvider, instance_id: str, max_bytes: int
) -> bytes:
    """The tail of the instance's serial console, ended instances included."""
    instance = get_instance(ctx, instance_id)
    if instance.provider != provider.name or not instance.provider_ref:
        raise NotFoundError(
            f"instance {instance_id} was provisioned by provider {instance.provider!r}; "
            f"this platform runs {provider.name!r}, which keeps no console for it"
        )
    out = provider.console(instance.provider_ref, max_bytes)
    if out is None:
        raise NotFoundError(f"provider {provider.name!r} keeps no serial console")
    return out


def reconcile_instances(ctx: Ctx, provider: InstanceProvider) -> list[str]:
    """After a platform restart: live instances whose machine is gone are marked lost.

    Each such instance becomes ``failed`` with an ``instance.lost`` fleet event and
    the provider cleans up what the machine left (``terminate``); the ids are
    returned. Machines the provider cannot see (``is_running`` None) are left
    alone. All accounts: this is the platform's own bookkeeping.
    """
    q = (
        select(NodeInstance)
        .where(NodeInstance.provider == provider.name)
        .where(NodeInstance.status.not_in(_ENDED))
        .order_by(NodeInstance.id)
        .with_for_update()
    )
    lost = []
    for instance in ctx.session.scalars(q):
        if not instance.provider_ref or provider.is_running(instance.provider_ref) is not False:
            continue
        before = instance.status
        instance.status = InstanceStatus.FAILED.value
        _event(
            ctx,
            "instance.lost",
            instance.node,
            instance,
            previous_status=before,
            reason=f"the {provider.name} machine {instance.provider_ref} is not running",
        )
        log.warning("instance %s: its %s machine is gone; marked lost", instance.id, provider.name)
        # What the machine left (its disk, its seed): a lost instance cannot be terminated.
        provider.terminate(instance.provider_ref)
        lost.append(instance.id)
    return lost


def first_module_set(ctx: Ctx, node: Node) -> tuple[BootModule, ...]:
    """The node's desired set as the initramfs boots it (services/boot_set.py)."""
    # boot_set reads composefs images (and the agent's formats): only when provisioning
    from powernode.platform.services.boot_set import BootModule  # noqa: PLC0415

    desired = desired_for(ctx, node.template, node_states(node.node_metadata))
    return tuple(
        BootModule(m.name, stack_rank(m.priority, Variety(m.variety)), m.composefs_digest)
        for m in desired.modules
        if m.composefs_digest
    )
