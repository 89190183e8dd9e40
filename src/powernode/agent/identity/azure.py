"""Azure source: IMDS ``/metadata/instance/compute/vmId``.

Followed: Azure IMDS documentation, as summarised in IDENTITY_SOURCES.md §5.
Every request needs ``Metadata: true``, must not carry ``X-Forwarded-For``
and must bypass proxies; ``api-version`` is mandatory (400 without it) and a
leaf value needs ``format=text``. The vmId is a UUID; SMBIOS ``product_uuid``
equals it on Gen2 VMs and shows it byte-swapped on Gen1, so when DMI is
readable we cross-check in both orders and warn on a mismatch.

Gate: DMI ``chassis_asset_tag`` ``7783-7084-3265-9085-8269-3286-77`` (the only
signal cloud-init trusts: plain Hyper-V shares the vendor strings).
"""

from __future__ import annotations

from urllib.parse import urlencode

from powernode.agent.identity.dmi import dmi_field
from powernode.agent.identity.gate import require_platform_signal
from powernode.agent.identity.metadata_http import ProbeClock, expect_ok, fetch
from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss
from powernode.agent.identity.validate import (
    InvalidIdentifier,
    parse_uuid,
    swap_uuid_byte_order,
)

VMID_PATH = "/metadata/instance/compute/vmId"
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"


def azure_signal(ctx: ProbeContext) -> str | None:
    if dmi_field(ctx, "chassis_asset_tag") == AZURE_ASSET_TAG:
        return "DMI chassis_asset_tag is Azure's"
    return None


class AzureSource:
    name = "azure"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        why = require_platform_signal(ctx, "Azure", azure_signal(ctx))
        query = urlencode({"api-version": ctx.config.azure_api_version, "format": "text"})
        url = f"{ctx.config.azure_url.rstrip('/')}{VMID_PATH}?{query}"
        what = "Azure IMDS compute/vmId"
        response = fetch(ProbeClock(ctx), "GET", url, {"Metadata": "true"}, what)
        if response.status == 400:
            said = response.body[:200].decode("utf-8", errors="replace").strip()
            raise SourceMiss(
                Outcome.ERROR,
                f"{what}: HTTP 400 ({said!r}); check azure_api_version "
                f"{ctx.config.azure_api_version!r}",
            )
        expect_ok(response, what)
        try:
            vm_id = parse_uuid(response.text(what), "Azure vmId")
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, f"{what}: {e}") from e
        smbios = dmi_field(ctx, "product_uuid")
        if smbios is not None:
            lowered = smbios.lower()
            if lowered == vm_id:
                why += "; equals SMBIOS product_uuid (Gen2)"
            elif len(lowered) == 36 and swap_uuid_byte_order(lowered) == vm_id:
                why += "; equals SMBIOS product_uuid byte-swapped (Gen1)"
            else:
                ctx.warn(
                    f"Azure vmId {vm_id} matches SMBIOS product_uuid {lowered} in neither byte "
                    "order; the metadata answer may not describe this VM"
                )
        return vm_id, f"Azure IMDS {VMID_PATH}; {why}"
