"""The cheap local check in front of every cloud metadata probe.

cloud-init's ds-identify never touches the network to decide which cloud
it is on: every network source is gated on DMI (IDENTITY_SOURCES.md §0,
§12). An ungated probe on an ordinary LAN costs the whole connect timeout
(§14), so we do the same unless the operator explicitly allows probing.
"""

from __future__ import annotations

from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss


def require_platform_signal(ctx: ProbeContext, provider: str, signal: str | None) -> str:
    """Return a sentence naming why we probe, or raise a SKIPPED miss.

    ``signal`` is the local evidence found for ``provider`` (``None`` if none).
    """
    if signal is not None:
        return signal
    if ctx.config.probe_without_platform_signal:
        return "probed without a local signal (probe_without_platform_signal)"
    where = "in a container, DMI is the host's and not read" if ctx.in_container else "DMI"
    raise SourceMiss(
        Outcome.SKIPPED,
        f"no sign of {provider} ({where}); not probed",
    )
