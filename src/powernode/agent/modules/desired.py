"""The node's desired module set as ``GET /node_api/modules`` answers it (or a file says it).

The answer (docs/node-api.md) is an object::

    {"instance_id": "...", "template": "...",
     "modules": [{"name", "version", "composefs_digest", "effective_priority",
                  "reference", "trust_policy"}, ...],
     "composition": {...} | null}

``modules`` entries are read by :meth:`DesiredModule.from_api`; the
composition (``core.composition.Composition.to_dict``) decides the winners
priority order alone gets wrong (docs/agent-modules.md, masks). A bare list
of module entries is accepted too (``powernode-agent modules sync --desired
FILE`` on a node without a platform). Everything here came over the network:
sizes and counts are bounded, and a malformed entry fails the whole set with
the index and field at fault (a partial set would detach the rest). Every
path of the composition is checked here, before anything is written
(absolute, normalised, no NUL, bounded: ``agent/pathcheck.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powernode.agent.modules.reconcile import DesiredModule
from powernode.agent.pathcheck import check_composition_paths
from powernode.core.composition import Composition
from powernode.errors import ConfigError, DataError

MAX_DESIRED_MODULES = 1000
MAX_DESIRED_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class DesiredSet:
    modules: tuple[DesiredModule, ...]
    composition: Composition | None = None


def parse_desired(doc: Any, source: str = "GET /node_api/modules") -> DesiredSet:
    """The desired set in ``doc``; DataError naming ``source``, the entry and the field."""
    composition = None
    if isinstance(doc, dict):
        items = doc.get("modules")
        raw_comp = doc.get("composition")
        if raw_comp is not None:
            try:
                composition = Composition.from_dict(raw_comp)
            except DataError as e:
                raise DataError(f"{source}: composition: {e}") from e
            check_composition_paths(composition, f"{source}: composition")
    else:
        items = doc
    if not isinstance(items, list):
        raise DataError(f"{source}: 'modules' must be a list of module entries")
    if len(items) > MAX_DESIRED_MODULES:
        raise DataError(f"{source}: {len(items)} modules exceed the limit of {MAX_DESIRED_MODULES}")
    modules = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{source}: modules[{i}]: expected an object")
        try:
            modules.append(DesiredModule.from_api(item))
        except (DataError, ConfigError) as e:
            raise DataError(f"{source}: modules[{i}]: {e}") from e
    names = [m.name for m in modules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{source}: module(s) named more than once: {', '.join(dup)}")
    return DesiredSet(tuple(modules), composition)


def load_desired_file(path: Path) -> DesiredSet:
    """A desired set saved as JSON (the API's answer, or a list of its module entries)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_DESIRED_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the desired set: {e.strerror}") from e
    if len(raw) > MAX_DESIRED_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_DESIRED_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from e
    try:
        return parse_desired(doc, str(path))
    except DataError as e:
        raise ConfigError(str(e)) from e
