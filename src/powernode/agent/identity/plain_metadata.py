"""DigitalOcean and Hetzner Cloud: a plain GET returning a decimal ID, no headers.

Followed (IDENTITY_SOURCES.md §6, §7): DigitalOcean ``GET /metadata/v1/id``,
Hetzner ``GET /hetzner/v1/metadata/instance-id``; both answer text. Both are
gated on DMI ``sys_vendor`` (``DigitalOcean``, ``Hetzner``), and on both the
ID equals DMI ``product_serial`` (root-only): when we can read it we compare,
as cloud-init's local re-check does, and refuse a metadata answer that
contradicts the firmware.
"""

from __future__ import annotations

from dataclasses import dataclass

from powernode.agent.identity.dmi import dmi_field
from powernode.agent.identity.gate import require_platform_signal
from powernode.agent.identity.metadata_http import ProbeClock, expect_ok, fetch
from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss
from powernode.agent.identity.validate import InvalidIdentifier, parse_decimal_id


@dataclass(frozen=True)
class PlainMetadataSource:
    name: str
    provider: str
    sys_vendor: str
    path: str

    def _base(self, ctx: ProbeContext) -> str:
        url: str = getattr(ctx.config, f"{self.name}_url")
        return url.rstrip("/")

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        vendor = dmi_field(ctx, "sys_vendor")
        signal = f"DMI sys_vendor is {vendor!r}" if vendor == self.sys_vendor else None
        why = require_platform_signal(ctx, self.provider, signal)
        what = f"{self.provider} metadata {self.path}"
        response = fetch(ProbeClock(ctx), "GET", self._base(ctx) + self.path, {}, what)
        expect_ok(response, what)
        try:
            instance_id = parse_decimal_id(response.text(what), f"{self.provider} instance ID")
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, f"{what}: {e}") from e
        serial = dmi_field(ctx, "product_serial")
        if serial is not None:
            if serial != instance_id:
                raise SourceMiss(
                    Outcome.INVALID,
                    f"{what}: answered {instance_id} but DMI product_serial is {serial!r}; "
                    "the metadata service does not describe this machine",
                )
            why += "; equals DMI product_serial"
        return instance_id, f"{self.provider} metadata {self.path}; {why}"


DIGITALOCEAN = PlainMetadataSource(
    name="digitalocean",
    provider="DigitalOcean",
    sys_vendor="DigitalOcean",
    path="/metadata/v1/id",
)
HETZNER = PlainMetadataSource(
    name="hetzner",
    provider="Hetzner Cloud",
    sys_vendor="Hetzner",
    path="/hetzner/v1/metadata/instance-id",
)
