"""The node's desired module set as ``GET /node_api/modules`` answers it (or a file says it).

The answer (docs/node-api.md) is an object::

    {"instance_id": "...", "template": "...",
     "modules": [{"name", "version", "composefs_digest", "effective_priority",
                  "reference", "trust_policy"}, ...],
     "composition": {...} | null}

The answer is read strictly as :class:`powernode.node.records.DesiredModules`; the
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
from dataclasses import dataclass, replace
from pathlib import Path

from powernode.agent.modules.reconcile import DesiredModule
from powernode.agent.pathcheck import check_composition_paths
from powernode.agent.placeholders import facts_from
from powernode.core.composition import Composition
from powernode.errors import ConfigError, DataError
from powernode.node import records

MAX_DESIRED_MODULES = records.MAX_DESIRED_MODULES
MAX_DESIRED_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class DesiredSet:
    modules: tuple[DesiredModule, ...]
    composition: Composition | None = None


def parse_desired(
    doc: records.DesiredModules | object, source: str = "GET /node_api/modules"
) -> DesiredSet:
    """The desired set in ``doc`` (the answer, or a JSON list of its module entries).

    DataError naming ``source``, the entry and the field.
    """
    if isinstance(doc, list):
        if len(doc) > MAX_DESIRED_MODULES:
            raise DataError(
                f"{source}: {len(doc)} modules exceed the limit of {MAX_DESIRED_MODULES}"
            )
        doc = {"modules": doc}
    answer = doc if isinstance(doc, records.DesiredModules) else _answer(doc, source)
    composition = None
    if answer.composition is not None:
        try:
            composition = Composition.from_dict(answer.composition)
        except DataError as e:
            raise DataError(f"{source}: composition: {e}") from e
        check_composition_paths(composition, f"{source}: composition")
    modules = []
    whole = answer.to_json()
    for i, item in enumerate(answer.modules):
        try:
            module = DesiredModule.from_record(item)
        except (DataError, ConfigError) as e:
            raise DataError(f"{source}: modules[{i}]: {e}") from e
        if item.variety == "instance":  # its templates render from these (modules/render.py)
            module = replace(module, facts=facts_from(whole, item.to_json()))
        modules.append(module)
    names = [m.name for m in modules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{source}: module(s) named more than once: {', '.join(dup)}")
    return DesiredSet(tuple(modules), composition)


def _answer(doc: object, source: str) -> records.DesiredModules:
    if not isinstance(doc, dict):
        raise DataError(f"{source}: expected a JSON object (or a list of module entries)")
    return records.DesiredModules.from_json(doc, source)


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
