"""KubeVirt source: the VM's ``spec.domain.firmware.uuid``, seen as SMBIOS ``product_uuid``.

Followed (IDENTITY_SOURCES.md §8; KubeVirt pkg/virt-launcher/.../sysinfo.go):
KubeVirt writes ``firmware.uuid`` into the SMBIOS system UUID and sets the
system manufacturer to ``KubeVirt`` (configurable cluster-wide, the default
is what we gate on). Since v1.6 the VM webhook stores a random UUID in the
VM spec, so it survives restarts; a bare VMI without ``firmware.uuid`` gets
a fresh one each start — the platform's duplicate/new-instance checks must
catch that, we cannot tell from inside.
"""

from __future__ import annotations

from powernode.agent.identity.dmi import DMI_DIR, dmi_field, read_product_uuid
from powernode.agent.identity.gate import require_platform_signal
from powernode.agent.identity.source import ProbeContext


class KubeVirtSource:
    name = "kubevirt"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        vendor = dmi_field(ctx, "sys_vendor")
        signal = "DMI sys_vendor is 'KubeVirt'" if vendor == "KubeVirt" else None
        why = require_platform_signal(ctx, "KubeVirt", signal)
        value = read_product_uuid(ctx, "KubeVirt firmware UUID")
        return value, f"KubeVirt spec.domain.firmware.uuid via {DMI_DIR}/product_uuid; {why}"
