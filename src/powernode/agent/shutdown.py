"""SIGTERM's last step (seed 000, lifecycle drain): take the module union off the root.

After the drain (tasks reported, events flushed) the agent unmounts what it
mounted: every union generation on ``modules_root`` and the run tmpfs under
the state directory. Stopped by anything but a signal (``max_beats`` in
tests and benchmarks) it leaves them. The next start restores them from the
attach state after verifying each module again (``ModuleService.start``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from powernode.agent.modules.layout import NodeLayout

log = logging.getLogger(__name__)

SIGNALS = frozenset({"SIGTERM", "SIGINT"})


def unmount_on_stop(layout: NodeLayout, reason: str) -> bool:
    """Unmount the union when ``reason`` is a signal; whether anything was served."""
    if reason not in SIGNALS:
        return False
    # The module stack only when it is torn down: the agent's idle memory (bench_agent_rss).
    from powernode.agent.modules.union import serving_union, teardown  # noqa: PLC0415

    served = serving_union(layout)
    try:
        teardown(layout)
    except OSError as e:  # the drain must still exit; say what stayed
        log.error("could not unmount the modules under %s: %s", layout.root, e)
        return served
    if served:
        log.info("%s: unmounted the module union from %s", reason, layout.root)
    return served
