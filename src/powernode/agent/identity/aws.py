"""AWS EC2 source: IMDSv2 (session token, then ``meta-data/instance-id``).

Followed: the EC2 User Guide on IMDSv2, as summarised in IDENTITY_SOURCES.md §3.
``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` returns
a token; ``GET /latest/meta-data/instance-id`` with ``X-aws-ec2-metadata-token``
returns the ID. Only the ``/latest/`` token path works. A 401 means the token
expired: fetch one more token, once. No IMDSv1 fallback (cloud-init has none
on AWS either): a tokenless GET would also answer on EC2 emulators that are
not AWS. A token PUT that times out on EC2 usually means the IP hop limit is
1 and we run behind a bridge.

Gate (§3): DMI ``board_asset_tag`` holding an ``i-…`` ID (Nitro, world-readable),
a system UUID starting with ``ec2`` in either byte order, ``sys_vendor``
``Amazon EC2``, or /sys/hypervisor/uuid starting with ``ec2`` (Xen).
"""

from __future__ import annotations

from powernode.agent.identity.dmi import dmi_field
from powernode.agent.identity.gate import require_platform_signal
from powernode.agent.identity.metadata_http import ProbeClock, ProbeTimeout, expect_ok, fetch
from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss, read_host_text
from powernode.agent.identity.validate import (
    InvalidIdentifier,
    parse_aws_instance_id,
    swap_uuid_byte_order,
)

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TOKEN_LENGTH = 4096


def aws_signal(ctx: ProbeContext) -> str | None:
    tag = dmi_field(ctx, "board_asset_tag")
    if tag and tag.startswith("i-"):
        return f"DMI board_asset_tag {tag!r} is an EC2 instance ID (Nitro)"
    uuid = dmi_field(ctx, "product_uuid")
    if uuid and len(uuid) == 36:
        lowered = uuid.lower()
        try:
            swapped = swap_uuid_byte_order(lowered)
        except ValueError:
            swapped = ""
        if lowered.startswith("ec2") or swapped.startswith("ec2"):
            return f"DMI product_uuid {uuid} starts with ec2"
    if dmi_field(ctx, "sys_vendor") == "Amazon EC2":
        return "DMI sys_vendor is 'Amazon EC2'"
    if not ctx.in_container:
        try:
            hv = read_host_text(ctx.path("/sys/hypervisor/uuid"), 1024)
        except SourceMiss:
            hv = None
        if hv and hv.strip().lower().startswith("ec2"):
            return "/sys/hypervisor/uuid starts with ec2 (Xen)"
    return None


class AwsSource:
    name = "aws"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        why = require_platform_signal(ctx, "AWS EC2", aws_signal(ctx))
        base = ctx.config.aws_url.rstrip("/")
        clock = ProbeClock(ctx)
        body = ""
        for attempt in (1, 2):
            token = self._token(ctx, clock, base)
            response = fetch(
                clock,
                "GET",
                base + INSTANCE_ID_PATH,
                {TOKEN_HEADER: token},
                "IMDSv2 instance-id",
            )
            if response.status == 401 and attempt == 1:
                continue  # token expired or revoked between PUT and GET: one fresh token
            if response.status == 401:
                raise SourceMiss(
                    Outcome.ERROR, "IMDSv2 instance-id: HTTP 401 even with a fresh token"
                )
            body = expect_ok(response, "IMDSv2 instance-id").text("IMDSv2 instance-id")
            break
        try:
            instance_id = parse_aws_instance_id(body)
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, f"IMDSv2 {base}{INSTANCE_ID_PATH}: {e}") from e
        return instance_id, f"AWS IMDSv2 {INSTANCE_ID_PATH}; {why}"

    def _token(self, ctx: ProbeContext, clock: ProbeClock, base: str) -> str:
        what = "IMDSv2 token PUT"
        try:
            response = fetch(
                clock, "PUT", base + TOKEN_PATH, {TTL_HEADER: str(ctx.config.aws_token_ttl)}, what
            )
        except ProbeTimeout as miss:
            raise SourceMiss(
                Outcome.ERROR,
                f"{miss.reason}; on EC2 a token PUT that never answers usually means "
                "HttpPutResponseHopLimit is 1 and the agent sits behind a bridge (set it to 2)",
            ) from miss
        if response.status == 403:
            raise SourceMiss(
                Outcome.ERROR, f"{what}: HTTP 403, the instance metadata service is disabled"
            )
        token = expect_ok(response, what).text(what).strip()
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
            raise SourceMiss(
                Outcome.INVALID,
                f"{what}: the token is empty, longer than {MAX_TOKEN_LENGTH} characters or "
                "not printable",
            )
        return token
