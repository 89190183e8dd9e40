"""Typed, bounded dataclass fields for the agent's config and the node API's records.

The agent once used pydantic for both. Importing pydantic and building its
schemas cost ~15 MB of resident memory on every node (bench/bench_agent_rss.py:
54 MB against a 50 MB target), for a dozen flat records. This module does the
part the agent needs: each field typed (``str``, ``int``, ``float``, ``bool``,
``Path``, ``datetime``, :class:`~powernode.oci.digest.Digest`, ``dict[str, <JSON>]``,
``dict[str, <scalar>]``, ``list[<record or scalar>]``, and ``X | None``),
bounded (:func:`bounded`), unknown keys refused or ignored, and every problem
named by its location (``tasks.0.id: ...``), all at once.

Strings are converted only with ``lenient=True`` (the environment gives the
config everything as text); a platform's JSON answer must carry the right
JSON types, except datetimes, which JSON carries as ISO 8601 text.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from powernode.errors import DataError
from powernode.oci.digest import Digest

T = TypeVar("T")
Extra = Literal["forbid", "ignore"]

# A JSON value as json.loads gives it.
JSON = Union[None, bool, int, float, str, list["JSON"], dict[str, "JSON"]]  # noqa: UP007

_SHOWN = 10
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class FieldErrors(DataError, ValueError):
    """Every field that did not fit, as ``(location, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        # A hostile answer can break thousands of fields: the message names the first few.
        shown = [f"{loc}: {msg}" if loc else msg for loc, msg in errors[:_SHOWN]]
        more = f"; and {len(errors) - _SHOWN} more" if len(errors) > _SHOWN else ""
        super().__init__("; ".join(shown) + more)


@dataclasses.dataclass(frozen=True)
class Bounds:
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def check(self, value: object) -> str | None:
        """The broken bound's message, or None."""
        if isinstance(value, str | list | dict):
            n, unit = len(value), "characters" if isinstance(value, str) else "items"
            if self.min_length is not None and n < self.min_length:
                return f"must have at least {self.min_length} {unit}, has {n}"
            if self.max_length is not None and n > self.max_length:
                return f"must have at most {self.max_length} {unit}, has {n}"
            return None
        for op, limit, ok in (
            (">", self.gt, operator.gt),
            (">=", self.ge, operator.ge),
            ("<", self.lt, operator.lt),
            ("<=", self.le, operator.le),
        ):
            if limit is not None and not ok(value, limit):  # type: ignore[arg-type]
                return f"must be {op} {limit:g}, got {value!r}"
        return None


def bounded(
    default: Any = dataclasses.MISSING,  # Any: a field default of the field's type
    default_factory: Callable[[], object] | None = None,
    **limits: Any,  # Any: Bounds' keyword arguments (numbers)
) -> Any:  # Any: what dataclasses.field returns
    """A dataclass field with :class:`Bounds` (``gt ge lt le min_length max_length``)."""
    meta = {"bounds": Bounds(**limits)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:  # Any: typing.get_type_hints
    return typing.get_type_hints(cls)


def _fields(cls: type) -> tuple[dataclasses.Field[object], ...]:
    return dataclasses.fields(cls)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in _fields(cls))


def build(
    cls: type[T],
    doc: object,
    *,
    extra: Extra = "ignore",
    lenient: bool = False,
    loc: str = "",
) -> T:
    """``cls`` (a dataclass) from the mapping ``doc``; :class:`FieldErrors` lists all problems."""
    if not isinstance(doc, Mapping):
        raise FieldErrors([(loc, f"expected an object, got {type(doc).__name__}")])
    errors: list[tuple[str, str]] = []
    known = field_names(cls)
    if extra == "forbid":
        errors += [(_at(loc, k), "unknown field") for k in sorted(set(doc) - set(known))]
    hints, values = _hints(typing.cast(type, cls)), {}
    for f in _fields(cls):
        where = _at(loc, f.name)
        if f.name not in doc:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append((where, "field required"))
            continue
        bounds: Bounds | None = f.metadata.get("bounds")
        raw = doc[f.name]
        # Lengths first: an oversized list is refused before any item is read.
        if bounds and isinstance(raw, str | list | dict) and (problem := bounds.check(raw)):
            errors.append((where, problem))
            continue
        try:
            value = _convert(hints[f.name], raw, where, extra, lenient)
        except FieldErrors as e:
            errors += e.errors
            continue
        problem = bounds.check(value) if bounds and value is not None else None
        if problem:
            errors.append((where, problem))
        else:
            values[f.name] = value
    if errors:
        raise FieldErrors(errors)
    try:
        return cls(**values)
    except ValueError as e:  # a __post_init__ check
        raise FieldErrors([(loc, str(e))]) from e


def _at(loc: str, name: str | int) -> str:
    return f"{loc}.{name}" if loc else str(name)


def _convert(
    tp: Any,  # Any: a type form (typing has no type for one)
    value: object,
    where: str,
    extra: Extra,
    lenient: bool,  # Any: a type form
) -> object:  # Any: a type form
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, extra, lenient)
    if origin is list:
        if not isinstance(value, list):
            raise FieldErrors([(where, f"expected a list, got {type(value).__name__}")])
        errors, out = [], []
        for i, item in enumerate(value):
            try:
                out.append(_convert(args[0], item, _at(where, i), extra, lenient))
            except FieldErrors as e:
                errors += e.errors
        if errors:
            raise FieldErrors(errors)
        return out
    if origin is dict:
        if not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise FieldErrors([(where, "expected an object with string keys")])
        if args[1] not in _SCALARS:
            return value  # JSON: kept as it is
        errors, converted = [], {}
        for k, item in value.items():
            try:
                converted[k] = _convert(args[1], item, _at(where, k), extra, lenient)
            except FieldErrors as e:
                errors += e.errors
        if errors:
            raise FieldErrors(errors)
        return converted
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise FieldErrors([(where, f"expected one of {choices}, got {_show(value)}")])
    if dataclasses.is_dataclass(tp) and tp not in _SCALARS:
        return build(typing.cast(type, tp), value, extra=extra, lenient=lenient, loc=where)
    convert = _SCALARS.get(tp)
    if convert is None:  # pragma: no cover - a record declared with an unsupported type
        raise TypeError(f"{where}: unsupported field type {tp!r}")
    try:
        return convert(value, lenient)
    except (TypeError, ValueError) as e:
        raise FieldErrors([(where, str(e))]) from None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _str(value: object, _lenient: bool) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _int(value: object, lenient: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if lenient and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise TypeError(f"expected an integer, got {_show(value)}")


def _float(value: object, lenient: bool) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if lenient and isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise TypeError(f"expected a number, got {_show(value)}")


def _bool(value: object, lenient: bool) -> bool:
    if isinstance(value, bool):
        return value
    if lenient and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeError(f"expected true or false, got {_show(value)}")


def _path(value: object, _lenient: bool) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value and "\0" not in value:
        return Path(value)
    raise TypeError(f"expected a path, got {_show(value)}")


def _datetime(value: object, _lenient: bool) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected an ISO 8601 date and time, got {_show(value)}")


def _digest(value: object, _lenient: bool) -> Digest:
    if isinstance(value, Digest):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected a digest string, got {_show(value)}")
    try:
        return Digest.parse(value)
    except DataError as e:
        raise ValueError(str(e)) from None


_SCALARS: dict[object, Callable[[object, bool], object]] = {
    str: _str,
    int: _int,
    float: _float,
    bool: _bool,
    Path: _path,
    datetime: _datetime,
    Digest: _digest,
}
