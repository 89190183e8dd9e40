"""Netboot: the per-instance iPXE script and the image it boots.

Unauthenticated on purpose: a machine in its firmware holds no operator
token. What it gets reveals nothing secret: the instance id (a random UUID
the caller already had to know), the platform's URL and a kernel and
initramfs built from public Debian packages. No bootstrap token is ever in
the script; a netbooted node enrolls with a token handed over another way
(docs/qemu-provider.md). Unknown, malformed and ended instances get the
same 404, so the endpoint cannot be used to tell them apart.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from powernode.platform.db import InstanceStatus, NodeInstance
from powernode.platform.problems import NotFoundError
from powernode.platform.services import boot_image

_ENDED = frozenset({InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value})


def live_instance(session: Session, instance_id: str) -> NodeInstance:
    """The instance a netboot request names, when it is alive; NotFoundError otherwise."""
    try:
        canonical = str(uuid.UUID(instance_id))
    except ValueError:
        canonical = ""
    instance = session.get(NodeInstance, canonical) if canonical == instance_id else None
    if instance is None or instance.status in _ENDED:
        raise NotFoundError(f"no live instance {instance_id!r} to netboot")
    return instance


def script(image: boot_image.BootImage, instance_id: str, platform_url: str, base: str) -> str:
    """The iPXE script: kernel and initrd from ``base`` (the netboot URL of the instance)."""
    cmdline = boot_image.instance_cmdline(image, instance_id, platform_url)
    return (
        "#!ipxe\n"
        f"# powernode netboot: instance {instance_id}\n"
        f"kernel {base}/kernel initrd=initrd {cmdline}\n"
        f"initrd --name initrd {base}/initrd\n"
        "boot\n"
    )
