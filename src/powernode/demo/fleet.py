"""The operator's part of seed 004, as calls through :class:`~.operator.Operator`.

Each function is one tutorial action (``system_create_module_from_package``,
``system_promote_module_version``, ``system_assign_module_to_template`` …)
made with the API and shown as its ``powernode system`` line; the answers are
returned as plain values the demo checks and the command line shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.client import JsonObject
from powernode.core.composition import Composition
from powernode.demo.operator import Operator
from powernode.errors import PowernodeError
from powernode.toolchain.localtemplate import Assignment

log = logging.getLogger(__name__)

PROMOTION = ("staging", "blessed", "live")
INGEST_TIMEOUT = 60.0
POLL_SECONDS = 0.2


class IngestError(PowernodeError):
    """A pushed tag was rejected by ingest, or not ingested in time."""


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def short(value: object) -> str:
    """A cell's text; a digest cut to ``sha256:`` and 12 hex digits (enough to tell apart)."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith("sha256:") and len(text) > 19:
        return text[:19] + "…"
    return text


def table(title: str, headers: Sequence[str], items: Sequence[Mapping[str, object]]) -> Table:
    """The ``headers`` columns of each item, as text."""
    rows = tuple(tuple(short(i.get(h)) for h in headers) for i in items)
    return Table(title, tuple(headers), rows)


def create_module(op: Operator, a: Assignment, public_key_file: Path, public_pem: str) -> str:
    """Register the module trusting the demo key; returns its one-time webhook secret."""
    cli = [
        "create-module",
        a.repo.name,
        "--category",
        a.category,
        "--variety",
        a.variety.value,
    ]
    if a.parent:
        cli += ["--parent-module", a.parent]
    cli += ["--cosign-public-key-file", str(public_key_file)]
    body = {
        "name": a.repo.name,
        "category_slug": a.category,
        "variety": a.variety.value,
        "parent_module": a.parent,
        "description": a.repo.manifest.description or "",
        "cosign_public_key": public_pem,
    }
    data = op.call(cli, "POST", "/node_modules", body)
    return str(data["module"]["webhook_secret"])


def wait_built(
    op: Operator,
    tags: dict[str, str],
    *,
    timeout: float = INGEST_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, JsonObject]:
    """Poll each module's ingests until its tag is ``built``; the ingest rows by module.

    ``progress(done, total)`` is told each time more tags are built.
    """
    deadline = clock() + timeout
    done: dict[str, JsonObject] = {}
    last: dict[str, JsonObject] = {}
    reported = -1
    for _ in range(int(timeout / POLL_SECONDS) + 2):  # bounded in count and time
        for name, tag in tags.items():
            if name in done:
                continue
            rows = op.get(f"/node_modules/{name}/ingests")["ingests"]
            row = next((r for r in rows if r["tag"] == tag), None)
            if row is None:
                continue
            last[name] = row
            if row["state"] == "built":
                done[name] = row
            elif row["state"] == "rejected":
                raise IngestError(
                    f"the platform rejected {name}:{tag}: {row['reason']} (see "
                    f"`powernode system list-module-ingests {name}`)"
                )
        if progress is not None and len(done) != reported:
            progress(len(done), len(tags))
            reported = len(done)
        if len(done) == len(tags) or clock() > deadline:
            break
        sleep(POLL_SECONDS)
    missing = sorted(set(tags) - set(done))
    if missing:
        states = ", ".join(
            f"{m}:{tags[m]} {last[m]['state']}"
            + (f" ({last[m]['reason']})" if last[m].get("reason") else "")
            if m in last
            else f"{m}:{tags[m]} not queued"
            for m in missing
        )
        raise IngestError(
            f"not ingested within {timeout:.0f} s: {states}; the platform's log has the "
            "ingest worker's rounds"
        )
    return done


def promote_to_live(op: Operator, version_id: str) -> JsonObject:
    """built → staging → blessed → live, one legal step at a time (docs/platform.md)."""
    data: JsonObject = {}
    for to in PROMOTION:
        data = op.call(
            ["promote-module-version", version_id, "--to", to],
            "POST",
            f"/node_module_versions/{version_id}/promote",
            {"to": to, "note": "demo"},
        )
    return data


def assign(op: Operator, template: str, a: Assignment, default_priority: int) -> JsonObject:
    """Assign the module; the template file's priority override is passed when it has one."""
    cli = ["assign-module-to-template", "--template", template, "--module", a.repo.name]
    override = a.priority if a.priority != default_priority else None
    if override is not None:
        cli += ["--effective-priority", str(override)]
    body: dict[str, object] = {
        "module_name": a.repo.name,
        "metadata": {},
        "effective_priority": override,
    }
    return op.call(cli, "POST", f"/node_templates/{template}/assignments", body)


def composition_tables(data: JsonObject) -> list[Table]:
    """The composition preview as the CLI's ``template-composition`` shows it."""
    desired = table(
        "desired modules",
        ("name", "version_string", "promotion_state", "priority", "assigned"),
        data["modules"],
    )
    headers, rows = Composition.from_dict(data["composition"]).table_rows()
    union = Table(
        f"composition of {data['template']['name']}",
        tuple(headers),
        tuple(tuple(r) for r in rows),
    )
    return [desired, union]


def drift_table(data: JsonObject) -> Table:
    return table(
        f"drift of {data['hostname']}: drift {str(data['drift']).lower()}",
        ("name", "status", "desired_version", "desired_digest", "running_digest"),
        data["modules"],
    )


def drift_report(op: Operator, instance_id: str) -> JsonObject:
    return op.call(
        ["drift-report", "--instance", instance_id],
        "GET",
        f"/node_instances/{instance_id}/drift",
    )
