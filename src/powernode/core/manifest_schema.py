"""The manifest's JSON Schema (draft 2020-12) and its errors in words a module author reads.

The schema ships in the package (core/schema/manifest.schema.json) so editors and CI
can use the same file ``powernode module schema`` prints. jsonschema's own messages
("Additional properties are not allowed ('x' was unexpected)") name neither the key's
position nor what to do; here each error becomes one Note per offending key or value,
at a canonical field path the caller maps back to a YAML line and column.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from powernode.core.manifest_legacy import Note, suggest
from powernode.core.yamlload import FieldPath, describe, show

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

SCHEMA_FILE = "manifest.schema.json"

# Keys people carry over from the platform's NodeModule row or older docs.
_PLATFORM_FIELDS = frozenset(
    {"category", "variety", "parent_module", "cosign_identity_regexp", "cosign_issuer_regexp"}
)
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "null": "empty",
}


@functools.cache
def schema_text() -> str:
    """The schema file exactly as shipped."""
    ref = importlib.resources.files("powernode.core").joinpath("schema").joinpath(SCHEMA_FILE)
    return ref.read_text(encoding="utf-8")


@functools.cache
def schema() -> Mapping[str, object]:
    loaded: dict[str, object] = json.loads(schema_text())
    return loaded


@functools.cache
def _validator() -> Draft202012Validator:
    # jsonschema (with referencing and the bundled meta-schemas) loads when a manifest is
    # first checked, not with the platform or the CLI that only import this module.
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema())


def schema_notes(doc: object, unquoted: Callable[[FieldPath], bool]) -> list[Note]:
    """Every schema error in ``doc``, by canonical path.

    ``unquoted(path)`` tells whether the value was written without quotes and read as a
    non-string, so a "must be a string" can say to quote it (``yes``, ``1.10``, ``~``).
    """
    notes: list[Note] = []
    for error in _validator().iter_errors(doc):
        notes.extend(_notes(error, unquoted))
    return notes


def _notes(error: ValidationError, unquoted: Callable[[FieldPath], bool]) -> list[Note]:
    path: FieldPath = tuple(error.absolute_path)
    kind = error.validator
    value = error.validator_value
    sub = error.schema if isinstance(error.schema, Mapping) else {}
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(sub.get("properties", {}))
        return [
            Note((*path, key), _unknown(key, known, top=not path), key=True)
            for key in error.instance
            if key not in known
        ]
    if kind == "required" and isinstance(error.instance, dict) and isinstance(value, list):
        return [
            Note(path, f"missing required key {key!r}")
            for key in value
            if key not in error.instance
        ]
    if kind == "type":
        wanted = _TYPE_NAMES.get(str(value), str(value))
        hint = ""
        if value == "string" and unquoted(path):
            hint = "; put it in quotes to make it a string"
        elif value == "array" and isinstance(error.instance, str):
            hint = f"; write a list, e.g. [{show(error.instance)}]"
        return [Note(path, f"must be {wanted}, not {describe(error.instance)}{hint}")]
    if kind == "const" and path == ("schema_version",):
        return [
            Note(
                path,
                f"unsupported schema_version {show(error.instance)}; this powernode "
                f"reads schema_version {value}",
            )
        ]
    if kind == "pattern" and "x-hint" in sub:
        return [Note(path, f"{show(error.instance)} is not {sub['x-hint']}")]
    if kind == "minLength" and value == 1:
        return [Note(path, "must not be empty")]
    return [Note(path, error.message)]


def _unknown(key: str, known: list[str], *, top: bool) -> str:
    if top and key in _PLATFORM_FIELDS:
        return (
            f"unknown key {key!r}: {key} is set at platform registration (the "
            "NodeModule row), not in the manifest"
        )
    return f"unknown key {key!r}{suggest(key, known)}"
