"""Placeholders for instance-variety modules: ``${instance.hostname}`` and friends.

The substitution language, all of it:

- ``${instance.<fact>}``: a fact of the instance from ``GET /node_api/modules``
  (``"instance"``: id, hostname, node_id, node_hostname, template, provider;
  ``node_metadata.<key>`` reaches one level into the node's metadata);
- ``${metadata.<key>}``: the module's assignment metadata (``"metadata"``);
- ``$${`` is a literal ``${``.

Names are ``[A-Za-z0-9_.-]``; there are no defaults, expressions, nesting,
conditionals, loops, environment or file access — nothing executes. A value
must be a string, a number or a boolean (rendered as JSON renders it). A
placeholder naming no fact is refused, naming the field (the file and the
placeholder) and the facts there are; so is an unterminated ``${``. Bounds:
at most :data:`MAX_PLACEHOLDERS` per text and :data:`MAX_OUTPUT` bytes out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from powernode.errors import DataError

MAX_PLACEHOLDERS = 1000
MAX_OUTPUT = 1 << 20
_TOKEN = re.compile(r"\$\$\{|\$\{([A-Za-z0-9_.-]{1,128})\}|\$\{")


def facts_from(answer: Mapping[str, object], module: Mapping[str, object]) -> dict[str, str]:
    """The flat fact table for one module of a ``GET /node_api/modules`` answer."""
    out: dict[str, str] = {}
    instance = answer.get("instance")
    for key, value in (instance if isinstance(instance, Mapping) else {}).items():
        if key == "node_metadata" and isinstance(value, Mapping):
            for k, v in value.items():
                _put(out, f"instance.node_metadata.{k}", v)
        else:
            _put(out, f"instance.{key}", value)
    metadata = module.get("metadata")
    for key, value in (metadata if isinstance(metadata, Mapping) else {}).items():
        _put(out, f"metadata.{key}", value)
    return out


def _put(out: dict[str, str], name: str, value: object) -> None:
    if isinstance(value, str):
        out[name] = value
    elif isinstance(value, bool | int | float):
        out[name] = json.dumps(value)


def render(text: str, facts: Mapping[str, str], where: str) -> str:
    """``text`` with its placeholders replaced; DataError naming ``where`` and the placeholder."""
    count = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal count
        count += 1
        if count > MAX_PLACEHOLDERS:
            raise DataError(f"{where}: more than {MAX_PLACEHOLDERS} placeholders")
        if m.group(0) == "$${":
            return "${"
        name = m.group(1)
        if name is None:
            raise DataError(f"{where}: '${{' at offset {m.start()} is not closed by a valid name")
        if name not in facts:
            known = ", ".join(sorted(facts)) or "none"
            raise DataError(f"{where}: placeholder ${{{name}}} names no fact (facts: {known})")
        return facts[name]

    out = _TOKEN.sub(sub, text)
    if len(out.encode()) > MAX_OUTPUT:
        raise DataError(f"{where}: rendered text larger than {MAX_OUTPUT} bytes")
    return out
