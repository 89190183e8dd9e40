"""Module data migrations (seed 000's ``migration`` package): run on a version bump.

A module's manifest declares them, in order::

    "migrations": [
      {"id": "0001-split-config", "since": "2.0.0", "script": "mv app.conf conf.d/",
       "timeout_seconds": 300}]

On an upgrade from ``old`` to ``new`` the agent runs, before the new version
is mounted, every migration with ``old < since <= new`` (semantic versions)
that this node has not run yet, in declaration order, against the module's
persistent state directory ``<state_dir>/module-state/<module>`` (the
script's working directory, also ``$POWERNODE_MODULE_STATE``), confined as a
NodeScript is (agent/confine.py) with its timeout. The scripts need no
signature of their own: they come in the module's config, which the module's
signature covers (checked before the pull).

Once each, recorded: the ids that ran are written to
``<state_dir>/migrations/<module>.json`` after the last succeeded.

A failed migration (exit code, timeout, a bad declaration) leaves the old
version attached and serving and its state as it was: the state directory is
copied first (``cp -a --reflink=auto``: copy-on-write where the file system
can) and put back; none of the run's migrations is recorded; the refusal
(reason ``migration``) says which one failed and why, with its stderr.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.refusal import Refusal
from powernode.agent.modules.state import AttachState
from powernode.agent.nodescripts import execute
from powernode.core.semver import Version
from powernode.errors import DataError, PowernodeError
from powernode.run import run
from powernode.signing.nodescript import DEFAULT_LIMITS, NodeScript

log = logging.getLogger(__name__)

MAX_MIGRATIONS = 256


@dataclass(frozen=True)
class Migration:
    id: str
    since: Version
    script: str
    timeout_seconds: int = 300


class MigrationFailed(PowernodeError):
    pass


def parse_migrations(manifest: Mapping[str, object] | None) -> list[Migration]:
    """The manifest's ``migrations``; DataError naming the entry and field."""
    items = (manifest or {}).get("migrations") or []
    if not isinstance(items, list) or len(items) > MAX_MIGRATIONS:
        raise DataError(f"migrations: a list of at most {MAX_MIGRATIONS} entries")
    out, seen = [], set()
    for i, m in enumerate(items):
        at = f"migrations[{i}]"
        if not isinstance(m, dict):
            raise DataError(f"{at}: an object")
        mid = m.get("id")
        if not isinstance(mid, str) or not mid or len(mid) > 128 or mid in seen:
            raise DataError(f"{at}.id: a unique, non-empty string")
        seen.add(mid)
        try:
            since = Version.parse(str(m.get("since", "")))
        except PowernodeError as e:
            raise DataError(f"{at}.since: {e}") from e
        script = m.get("script")
        if not isinstance(script, str) or not script:
            raise DataError(f"{at}.script: a non-empty shell script")
        timeout = m.get("timeout_seconds", 300)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
            raise DataError(f"{at}.timeout_seconds: an integer 1-86400")
        out.append(Migration(mid, since, script, timeout))
    return out


def state_dir(layout: NodeLayout, module: str) -> Path:
    return layout.state / "module-state" / module


def _record_file(layout: NodeLayout, module: str) -> Path:
    return layout.state / "migrations" / f"{module}.json"


def done_ids(layout: NodeLayout, module: str) -> list[str]:
    try:
        doc = json.loads(_record_file(layout, module).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise DataError(f"{_record_file(layout, module)}: unreadable ({e})") from e
    return [str(r["id"]) for r in doc.get("done", [])]


def due(
    migrations: Sequence[Migration], old: str, new: str, done: Sequence[str]
) -> list[Migration]:
    """Those with ``old < since <= new`` not run yet, in declaration order."""
    lo, hi = Version.parse(old), Version.parse(new)
    return [m for m in migrations if lo < m.since <= hi and m.id not in done]


def migrate(
    layout: NodeLayout, module: str, old: str, new: str, migrations: Sequence[Migration]
) -> list[str]:
    """Run what is due; the ids run. MigrationFailed with the state put back, nothing recorded."""
    todo = due(migrations, old, new, done_ids(layout, module))
    if not todo:
        return []
    data = state_dir(layout, module)
    data.mkdir(parents=True, exist_ok=True)
    snapshot = data.with_name(f".{module}.before-{new}")
    if snapshot.exists():
        shutil.rmtree(snapshot)
    run(["cp", "-a", "--reflink=auto", data, snapshot])
    ran: list[str] = []
    try:
        for m in todo:
            script = NodeScript(
                name=f"{module}-migration",
                version=1,
                script=m.script,
                timeout_seconds=m.timeout_seconds,
                limits=dict(DEFAULT_LIMITS),
            )
            result = execute(
                script,
                cwd=data,
                extra_env={
                    "POWERNODE_MODULE": module,
                    "POWERNODE_MODULE_STATE": str(data),
                    "POWERNODE_MIGRATION_ID": m.id,
                    "POWERNODE_MIGRATION_FROM": old,
                    "POWERNODE_MIGRATION_TO": new,
                },
            )
            if result["timed_out"] or result["exit_code"] != 0:
                why = (
                    f"killed after its timeout of {m.timeout_seconds} s"
                    if result["timed_out"]
                    else f"exited {result['exit_code']}"
                )
                stderr = str(result["stderr"])[-500:]
                raise MigrationFailed(
                    f"migration {m.id} ({old} -> {new}) {why}; stderr: {stderr!r}"
                )
            ran.append(m.id)
    except BaseException:
        shutil.rmtree(data)
        snapshot.rename(data)
        log.error("module %s: migration failed; its state was put back as it was", module)
        raise
    shutil.rmtree(snapshot)
    _record(layout, module, ran, old, new)
    return ran


def _record(layout: NodeLayout, module: str, ran: list[str], old: str, new: str) -> None:
    path = _record_file(layout, module)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        doc = {"module": module, "done": []}
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["done"] += [{"id": i, "from": old, "to": new, "at": at} for i in ran]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def before_apply(
    layout: NodeLayout,
    state: AttachState,
    upgrades: Sequence[tuple[str, str, str, Mapping[str, object] | None]],
) -> list[Refusal]:
    """Run the migrations of each ``(module, new version, new digest, new manifest)`` upgrade.

    A refusal per module whose migrations failed: the caller then applies nothing.
    """
    refusals = []
    for module, new, digest, manifest in upgrades:
        attached = state.modules.get(module)
        if attached is None or not attached.version or not new or attached.version == new:
            continue
        try:
            ran = migrate(layout, module, attached.version, new, parse_migrations(manifest))
        except PowernodeError as e:
            refusals.append(
                Refusal(module, digest, "migration", str(e), path=str(state_dir(layout, module)))
            )
            continue
        if ran:
            log.info("module %s %s -> %s: ran migrations %s", module, attached.version, new, ran)
    return refusals
