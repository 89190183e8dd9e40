"""Google Compute Engine source: ``/computeMetadata/v1/instance/id``.

Followed: GCE metadata server docs, as summarised in IDENTITY_SOURCES.md §4.
Requests carry ``Metadata-Flavor: Google`` (the server answers 403 without
it) and a genuine answer carries the same header back — Google's own
clients use that echo to recognise GCE, and so do we: an answer without it
comes from something else at that address. The ID is a decimal uint64.
We probe by IP (169.254.169.254), never by metadata.google.internal, which
only GCE's resolver knows.

Gate: DMI ``product_name`` ``Google Compute Engine`` (cloud-init also takes
``Google``), ``sys_vendor``/``bios_vendor`` ``Google``, or a ``product_serial``
starting with ``GoogleCloud-`` (root-only).
"""

from __future__ import annotations

from powernode.agent.identity.dmi import dmi_field
from powernode.agent.identity.gate import require_platform_signal
from powernode.agent.identity.metadata_http import ProbeClock, expect_ok, fetch
from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss
from powernode.agent.identity.validate import InvalidIdentifier, parse_decimal_id

INSTANCE_ID_PATH = "/computeMetadata/v1/instance/id"
FLAVOR_HEADER = "Metadata-Flavor"
FLAVOR = "Google"


def gcp_signal(ctx: ProbeContext) -> str | None:
    product = dmi_field(ctx, "product_name")
    if product in ("Google Compute Engine", "Google"):
        return f"DMI product_name is {product!r}"
    for name in ("sys_vendor", "bios_vendor"):
        if dmi_field(ctx, name) == "Google":
            return f"DMI {name} is 'Google'"
    serial = dmi_field(ctx, "product_serial")
    if serial and serial.startswith("GoogleCloud-"):
        return "DMI product_serial starts with GoogleCloud-"
    return None


class GcpSource:
    name = "gcp"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        why = require_platform_signal(ctx, "Google Compute Engine", gcp_signal(ctx))
        url = ctx.config.gcp_url.rstrip("/") + INSTANCE_ID_PATH
        what = "GCE metadata instance/id"
        response = fetch(ProbeClock(ctx), "GET", url, {FLAVOR_HEADER: FLAVOR}, what)
        if response.status == 403:
            raise SourceMiss(
                Outcome.ERROR,
                f"{what}: HTTP 403 (metadata endpoint disabled or the request was refused)",
            )
        expect_ok(response, what)
        if response.headers.get(FLAVOR_HEADER) != FLAVOR:
            raise SourceMiss(
                Outcome.INVALID,
                f"{what}: the answer from {url} lacks '{FLAVOR_HEADER}: {FLAVOR}', so it is not "
                "a GCE metadata server; not trusting it",
            )
        try:
            instance_id = parse_decimal_id(response.text(what), "GCE instance id")
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, f"{what}: {e}") from e
        return instance_id, f"GCE metadata {INSTANCE_ID_PATH}; {why}"
