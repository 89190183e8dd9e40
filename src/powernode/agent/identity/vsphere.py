"""VMware vSphere source: a guestinfo key, else the BIOS UUID from the DMI serial.

Followed (IDENTITY_SOURCES.md §9): guestinfo values are read with
``vmware-rpctool "info-get guestinfo.<key>"``; when the VMX restricts
``info-get`` for rpctool ("Permission denied") cloud-init falls back to
``vmtoolsd --cmd "info-get …"``, and so do we. A missing key exits non-zero
with "No value found". The operator sets the key with e.g.
``govc vm.change -e guestinfo.powernode.instance_id=<uuid>``.

Without the key we use vSphere's ``uuid.bios``, recovered from the DMI
``product_serial`` (``VMware-42 1f …-6a f6 …``), which holds the bytes in
order; ``product_uuid`` is byte-swapped on hardware version 13+ and so is
not used. Both DMI files are root-only.

Gate: DMI ``sys_vendor`` ``VMware, Inc.`` or a ``product_name`` containing
"vmware" (cloud-init's test). The tools run only after the gate passes.
"""

from __future__ import annotations

from powernode.agent.identity.dmi import DMI_DIR, dmi_field
from powernode.agent.identity.gate import require_platform_signal
from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss, read_host_text
from powernode.agent.identity.validate import InvalidIdentifier, parse_uuid, vmware_serial_to_uuid

NOT_INSTALLED = 127


def vsphere_signal(ctx: ProbeContext) -> str | None:
    if dmi_field(ctx, "sys_vendor") == "VMware, Inc.":
        return "DMI sys_vendor is 'VMware, Inc.'"
    product = dmi_field(ctx, "product_name")
    if product and "vmware" in product.lower():
        return f"DMI product_name {product!r} names VMware"
    return None


def read_guestinfo(ctx: ProbeContext, key: str) -> tuple[str | None, str]:
    """The value of ``key`` (``None`` if unset or unreadable) and what happened, in words."""
    command = f"info-get {key}"
    notes: list[str] = []
    for argv in (["vmware-rpctool", command], ["vmtoolsd", "--cmd", command]):
        result = ctx.config.run_command(argv, ctx.config.command_timeout)
        if result.returncode == 0:
            return result.stdout, f"{argv[0]} {command}"
        stderr = result.stderr.strip()
        if result.returncode == NOT_INSTALLED:
            notes.append(f"{argv[0]} not installed (open-vm-tools)")
            continue
        if "No value found" in stderr:
            return None, f"{key} is not set ({argv[0]}: No value found)"
        notes.append(f"{argv[0]} exited {result.returncode}: {stderr[:200]!r}")
        # "Permission denied" (info-get restricted for rpctool) and other failures:
        # try the next tool, as cloud-init does.
    return None, "; ".join(notes)


class VSphereSource:
    name = "vsphere"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        why = require_platform_signal(ctx, "VMware vSphere", vsphere_signal(ctx))
        key = ctx.config.vsphere_guestinfo_key
        value, how = read_guestinfo(ctx, key)
        if value is not None:
            try:
                instance_id = parse_uuid(value, f"guestinfo {key}")
            except InvalidIdentifier as e:
                raise SourceMiss(Outcome.INVALID, str(e)) from e
            return instance_id, f"vSphere guestinfo via {how}; {why}"
        serial_path = ctx.path(f"{DMI_DIR}/product_serial")
        try:
            serial = read_host_text(serial_path, 1024)
        except SourceMiss as miss:
            raise SourceMiss(miss.outcome, f"guestinfo: {how}; serial: {miss.reason}") from miss
        if serial is None:
            raise SourceMiss(
                Outcome.ABSENT, f"guestinfo: {how}; serial: {serial_path} does not exist"
            )
        try:
            instance_id = vmware_serial_to_uuid(serial)
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, f"guestinfo: {how}; serial: {e}") from e
        return instance_id, f"vSphere uuid.bios from DMI product_serial ({how}); {why}"
