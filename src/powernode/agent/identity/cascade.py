"""The cascade of seed 000: try each source in order; the first valid identity wins.

Order: kernel cmdline → QEMU fw-cfg → cloud metadata (AWS, GCP, Azure,
DigitalOcean, Hetzner, KubeVirt, vSphere) → DMI product_uuid → local
identity.cfg. Every attempt, successful or not, is recorded in the trail
with its reason, so an operator sees why the winner won and why each
earlier source did not; when none wins, ``UnresolvableIdentityError``
carries the full trail. All network probes together share one budget
(``total_timeout``), so a machine that is on no cloud never waits long.
"""

from __future__ import annotations

import logging

from powernode.agent.identity.aws import AwsSource
from powernode.agent.identity.azure import AzureSource
from powernode.agent.identity.cmdline import CmdlineSource
from powernode.agent.identity.config import IdentityConfig
from powernode.agent.identity.dmi import DmiSource
from powernode.agent.identity.fwcfg import FwCfgSource
from powernode.agent.identity.gcp import GcpSource
from powernode.agent.identity.kubevirt import KubeVirtSource
from powernode.agent.identity.local import LocalFileSource
from powernode.agent.identity.model import (
    Attempt,
    Identity,
    IdentityResult,
    IdentityTrail,
    Outcome,
    UnresolvableIdentityError,
)
from powernode.agent.identity.plain_metadata import DIGITALOCEAN, HETZNER
from powernode.agent.identity.source import ProbeContext, Source, SourceMiss, detect_container
from powernode.agent.identity.validate import InvalidIdentifier
from powernode.agent.identity.vsphere import VSphereSource

log = logging.getLogger(__name__)


def _registry() -> dict[str, Source]:
    sources: list[Source] = [
        CmdlineSource(),
        FwCfgSource(),
        AwsSource(),
        GcpSource(),
        AzureSource(),
        DIGITALOCEAN,
        HETZNER,
        KubeVirtSource(),
        VSphereSource(),
        DmiSource(),
        LocalFileSource(),
    ]
    return {s.name: s for s in sources}


SOURCES: dict[str, Source] = _registry()


def discover_identity(config: IdentityConfig) -> IdentityResult:
    """Return the first valid identity in ``config.sources`` order, with the trail.

    Raises ``UnresolvableIdentityError`` (its ``trail`` lists every source and
    why it gave nothing) when no source yields a valid identity.
    """
    clock = config.clock
    start = clock()
    ctx = ProbeContext(
        config=config,
        in_container=detect_container(config),
        network_deadline=start + config.total_timeout,
    )
    attempts: list[Attempt] = []
    for name in config.sources:
        source = SOURCES[name]
        t0 = clock()
        try:
            instance_id, detail = source.probe(ctx)
        except SourceMiss as miss:
            attempt = Attempt(name, miss.outcome, miss.reason, (clock() - t0) * 1000)
            attempts.append(attempt)
            log.debug("identity: %s", attempt)
            continue
        except InvalidIdentifier as e:  # a source forgot to wrap; still a clean miss
            attempts.append(Attempt(name, Outcome.INVALID, str(e), (clock() - t0) * 1000))
            continue
        elapsed = (clock() - t0) * 1000
        attempts.append(Attempt(name, Outcome.FOUND, detail, elapsed))
        identity = Identity(instance_id=instance_id, source=name, detail=detail)
        log.info("identity: %s from %s (%s)", instance_id, name, detail)
        return IdentityResult(identity, IdentityTrail(tuple(attempts)), tuple(ctx.warnings))
    trail = IdentityTrail(tuple(attempts))
    log.warning("identity: none of %d sources gave an identity", len(attempts))
    raise UnresolvableIdentityError(trail)
