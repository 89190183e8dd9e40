"""DMI/SMBIOS: the fields the cloud gates read, and the generic ``product_uuid`` source.

Facts followed (IDENTITY_SOURCES.md §10, Linux drivers/firmware/dmi-id.c):
/sys/class/dmi/id/product_uuid is mode 0400; the kernel hides an all-00 or
all-FF UUID by not creating the file; kernels before 4.15 print uppercase;
firmware placeholders must be refused in both byte orders. Inside a
container /sys/class/dmi is the host's, so we read no DMI there (as
cloud-init does). POWER guests have no DMI; systemd falls back to
/proc/device-tree/vm,uuid, and so do we.
"""

from __future__ import annotations

from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import (
    ProbeContext,
    SourceMiss,
    read_host_text,
)
from powernode.agent.identity.validate import InvalidIdentifier, parse_uuid

DMI_DIR = "/sys/class/dmi/id"
DEVICE_TREE_UUID = "/proc/device-tree/vm,uuid"
MAX_DMI_BYTES = 1024


def dmi_field(ctx: ProbeContext, name: str) -> str | None:
    """A DMI field, stripped, for gating; ``None`` when absent, unreadable or in a container.

    Gates must never fail the cascade: an unreadable root-only field just
    means "no signal from this field".
    """
    if ctx.in_container:
        return None
    try:
        text = read_host_text(ctx.path(f"{DMI_DIR}/{name}"), MAX_DMI_BYTES)
    except SourceMiss:
        return None
    if text is None:
        return None
    value = text.strip()
    return value or None


def read_product_uuid(ctx: ProbeContext, what: str) -> str:
    """The validated SMBIOS system UUID as Linux shows it, or ``SourceMiss``."""
    path = ctx.path(f"{DMI_DIR}/product_uuid")
    text = read_host_text(path, MAX_DMI_BYTES)
    if text is None:
        raise SourceMiss(
            Outcome.ABSENT,
            f"{path}: does not exist (no DMI on this machine, or the firmware UUID is "
            "all-00/all-FF and the kernel hides it)",
        )
    try:
        return parse_uuid(text, f"{what} ({path})")
    except InvalidIdentifier as e:
        raise SourceMiss(Outcome.INVALID, str(e)) from e


class DmiSource:
    name = "dmi"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        if ctx.in_container:
            raise SourceMiss(
                Outcome.SKIPPED,
                "in a container: /sys/class/dmi describes the host; its UUID is not ours",
            )
        if not ctx.path(DMI_DIR).is_dir():
            dt_path = ctx.path(DEVICE_TREE_UUID)
            text = read_host_text(dt_path, MAX_DMI_BYTES)
            if text is None:
                raise SourceMiss(
                    Outcome.ABSENT,
                    f"{ctx.path(DMI_DIR)}: no DMI on this machine (and no {DEVICE_TREE_UUID})",
                )
            try:
                value = parse_uuid(text.rstrip("\0"), f"device-tree UUID ({dt_path})")
            except InvalidIdentifier as e:
                raise SourceMiss(Outcome.INVALID, str(e)) from e
            return value, f"device-tree {DEVICE_TREE_UUID} (no DMI on this machine)"
        value = read_product_uuid(ctx, "SMBIOS product_uuid")
        return value, f"SMBIOS system UUID ({DMI_DIR}/product_uuid)"
