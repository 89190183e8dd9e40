"""The module layer inside the service loop: restore at start, sync on a timer or a task.

:class:`ModuleService` is what :class:`powernode.agent.runtime.Runtime`
holds. ``start()`` remounts what was attached before (``restore``,
verifying deeply again); ``sync(fetch)`` fetches the desired set
(``GET /node_api/modules`` through ``fetch``), pulls, verifies and
restacks (``reconcile.sync``), and turns the outcome into node events:

- ``module.refused`` (warning): one per refusal, with the reason, path,
  expected/actual digest and advice (:meth:`Refusal.event`). The same
  refusal is reported once, not on every cycle, until the module mounts or
  is refused for another reason; a restarted agent reports it again once.
- ``module.synced`` (info): the union changed (generation, actions).

Calls are serialised by a lock (the timer runs on the loop's thread, a
``modules.sync`` task on an executor thread) and, across processes, by the
state file's ``flock``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from powernode.agent.modules.attach import restore
from powernode.agent.modules.desired import parse_desired
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import Puller, SyncReport, sync
from powernode.agent.modules.refusal import Refusal
from powernode.agent.tasks import TaskError
from powernode.agent.transport import NodeClient, PlatformUnreachable
from powernode.errors import PowernodeError
from powernode.node.fields import JSON
from powernode.node.records import DesiredModules

log = logging.getLogger(__name__)

Emit = Callable[[str, str, dict[str, JSON]], None]  # kind, severity, payload
SYNCED = "module.synced"
INIT_FAILED = "module.init_failed"  # an init action failed after the union changed


def _key(r: Refusal) -> tuple[str, str, str, str]:
    return (r.module, r.digest, r.reason, r.path)


def report_dict(report: SyncReport) -> dict[str, Any]:  # Any: JSON
    """A sync report as JSON (the ``modules.sync`` task's result, ``sync --json``)."""
    return {
        "changed": report.changed,
        "generation": report.generation,
        "actions": [
            {"kind": a.kind, "module": a.module, "digest": a.digest, "previous": a.previous}
            for a in report.actions
        ],
        "refusals": [r.to_dict() for r in report.refusals],
        "init_failures": [dict(f) for f in report.init_failures],
    }


class ModuleService:
    """Restore and reconcile the node's modules; refusals become events."""

    def __init__(self, layout: NodeLayout, puller: Puller | None, emit: Emit) -> None:
        self.layout = layout
        self.puller = puller
        self._emit = emit
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str, str, str]] = set()
        self.last: SyncReport | None = None

    def _refused(self, refusals: tuple[Refusal, ...]) -> None:
        now = {_key(r) for r in refusals}
        for r in refusals:
            if _key(r) in self._reported:
                continue
            event = r.event()
            self._emit(event["kind"], event["severity"], event["payload"])
        self._reported = now

    def start(self) -> None:
        """Remount what was attached (agent start); modules that fail verification are reported."""
        with self._lock:
            if not self.layout.state_file.load().modules:
                return
            result = restore(self.layout)
            log.info(
                "restored %d module(s) as generation %d, %d refused",
                len(result.modules) - len({r.module for r in result.refused}),
                result.generation,
                len({r.module for r in result.refused}),
            )
            self._refused(result.refused)

    def sync(self, fetch: Callable[[], DesiredModules | Mapping[str, object]]) -> SyncReport:
        """One reconcile with the desired set ``fetch`` returns; never raises for a refusal."""
        doc = fetch()
        desired = parse_desired(doc if isinstance(doc, DesiredModules) else dict(doc))
        with self._lock:
            report = sync(
                self.layout, desired.modules, puller=self.puller, composition=desired.composition
            )
            self.last = report
            self._refused(report.refusals)
            if report.changed:
                payload = report_dict(report)
                del payload["refusals"], payload["init_failures"]
                self._emit(SYNCED, "info", payload)
            for failure in report.init_failures:
                self._emit(INIT_FAILED, "warning", dict(failure))
        return report

    def sync_with(self, client: NodeClient) -> dict[str, Any]:  # Any: JSON
        """One reconcile with ``client``'s ``GET /node_api/modules``; the report as JSON.

        A failure to fetch or parse the desired set is logged, becomes a
        ``module.sync_failed`` event (unless the platform was unreachable:
        the heartbeat reports that) and is raised.
        """
        try:
            report = self.sync(client.modules)
        except PlatformUnreachable as e:
            log.warning("module sync: platform unreachable: %s", e)
            raise
        except PowernodeError as e:
            log.error("module sync failed: %s", e)
            self._emit("module.sync_failed", "warning", {"error": str(e)})
            raise
        return report_dict(report)

    def task(self, client_factory: Callable[[], NodeClient]) -> dict[str, Any]:  # Any: JSON
        """The ``modules.sync`` task: reconcile with a client of its own (the loop owns its
        client); acks with the report, fails with the refusals (retryable only for pulls)."""
        client = client_factory()
        try:
            result = self.sync_with(client)
        except PlatformUnreachable as e:
            raise TaskError(str(e), retryable=True) from e
        except PowernodeError as e:
            raise TaskError(str(e), retryable=False) from e
        finally:
            client.close()
        refusals = result["refusals"]
        if refusals:
            # Only a failed pull may succeed on a retry; a verification refusal will not.
            retryable = all(r["reason"] == "pull-failed" for r in refusals)
            lines = [f"{r['module']}: {r['reason']}: {r['detail']}" for r in refusals[:5]]
            raise TaskError("modules refused: " + "; ".join(lines), retryable=retryable)
        return result
