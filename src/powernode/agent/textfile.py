"""The agent's metrics as a node-exporter textfile (``powernode_agent.prom``).

Chosen over an HTTP endpoint of its own: the agent then opens no port, adds no
server thread and no library to its 50 MB RSS budget (the exposition format is
a few lines of text), and every node already running node-exporter's textfile
collector (``--collector.textfile.directory``) exports it with the host's
figures. Written after every heartbeat cycle, atomically (temporary file in the
same directory, fsync, rename), so the collector never reads half a file.

Format: Prometheus' text exposition format 0.0.4 (``# HELP``, ``# TYPE``,
samples); label values escaped as it says (backslash, double quote, newline).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from powernode.durable import write_text

FILENAME = "powernode_agent.prom"


@dataclass(frozen=True)
class AgentFigures:
    version: str
    heartbeats: int  # answered by the platform since start
    failed_heartbeats: int  # consecutive, now
    last_heartbeat: datetime | None
    events_pending: int
    outcomes_pending: int
    certificate_not_after: datetime | None
    running_modules: Mapping[str, str] = field(default_factory=dict)  # name -> digest


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def render(f: AgentFigures) -> str:
    lines: list[str] = []

    def metric(
        name: str, kind: str, help_: str, samples: list[tuple[Mapping[str, str], float]]
    ) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{_labels(labels)} {value!r}")

    metric("powernode_agent_build_info", "gauge", "The agent's version.",
           [({"version": f.version}, 1.0)])  # fmt: skip
    metric("powernode_agent_heartbeats_total", "counter",
           "Heartbeats the platform answered since the agent started.",
           [({}, float(f.heartbeats))])  # fmt: skip
    metric("powernode_agent_heartbeat_failures", "gauge",
           "Consecutive heartbeats that did not reach the platform.",
           [({}, float(f.failed_heartbeats))])  # fmt: skip
    if f.last_heartbeat is not None:
        metric("powernode_agent_last_heartbeat_timestamp_seconds", "gauge",
               "When the platform last answered a heartbeat (Unix time).",
               [({}, f.last_heartbeat.timestamp())])  # fmt: skip
    metric("powernode_agent_spool_pending", "gauge",
           "Events and task outcomes waiting to be sent.",
           [({"kind": "event"}, float(f.events_pending)),
            ({"kind": "outcome"}, float(f.outcomes_pending))])  # fmt: skip
    if f.certificate_not_after is not None:
        metric("powernode_agent_certificate_expiry_timestamp_seconds", "gauge",
               "When the node's client certificate expires (Unix time).",
               [({}, f.certificate_not_after.timestamp())])  # fmt: skip
    modules = sorted(f.running_modules.items())
    metric("powernode_agent_module_info", "gauge",
           "A module the node runs, with its composefs digest.",
           [({"module": n, "digest": d}, 1.0) for n, d in modules])  # fmt: skip
    return "\n".join(lines) + "\n"


def write(directory: Path, figures: AgentFigures) -> Path:
    """Atomically replace ``directory/powernode_agent.prom``; returns its path."""
    target = directory / FILENAME
    write_text(target, render(figures), mode=0o644)  # node-exporter runs as its own user
    return target
