"""Untrusted YAML in, plain values out, with the line and column of every value.

``yaml.safe_load`` forgets where each value came from, accepts duplicate keys (the last
wins), expands aliases (the "billion laughs" bomb) and has no size, depth or count limits.
So we read PyYAML's *event* stream (libyaml's parser through ``CSafeLoader`` when it is
built in) and compose the values ourselves:

* every value's and every mapping key's 1-based line/column is recorded by its field path;
* anchors and aliases are refused where they stand (YAML 1.1 §3.2.2.2 lets one alias
  expand to a whole subtree, so nine short lines can mean 10⁹ nodes);
* duplicate keys and keys that are not strings are refused (YAML 1.1 §3.2.1.1 says keys
  are unique; PyYAML silently keeps the last);
* only the core scalar tags are read (str, int, float, bool, null); timestamps stay the
  text written, explicit other tags (``!!binary``, ``!!python/...``, ``!foo``) are refused;
* depth, node count and string length are bounded; exceeding depth or count stops at once.

Pure: takes text, returns values and problems; never raises for bad input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml import events

from powernode.errors import Problem

FieldPath = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # Any: C or pure loader class
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null"))
# Resolved from plain text but meaningless without aliases / in a manifest: keep the text.
_AS_TEXT = frozenset(f"{_TAG}{t}" for t in ("merge", "value"))
_COLLECTION_TAGS = frozenset({None, "!", f"{_TAG}map", f"{_TAG}seq"})
_RESOLVER: Any = yaml.resolver.Resolver()  # Any: types-PyYAML leaves resolve() untyped
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
MAX_PROBLEMS = 100  # stop collecting after this many, so a hostile file cannot flood output


def _mark(event: events.Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def _short(tag: str | None) -> str:
    return "!!" + tag[len(_TAG) :] if tag and tag.startswith(_TAG) else str(tag)


def _char(character: object) -> str:
    if isinstance(character, str) and character:
        return f"#x{ord(character[0]):04x}"
    if isinstance(character, int):
        return f"#x{character:04x}"
    return show(character)


def format_path(path: FieldPath) -> str:
    """``("dependencies", "requires", 2)`` → ``dependencies.requires[2]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def show(value: object, limit: int = 60) -> str:
    """A short repr for messages, so a 4 KiB string does not fill the terminal."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: object) -> str:
    """``a string ('x')``, ``a list``, ``empty (null)`` — for "must be X, not Y"."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({show(value)})"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


@dataclass
class YamlDocument:
    """A composed document: its value and where each part of it was written."""

    filename: str
    value: object = None
    marks: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    # Scalars written without quotes that YAML read as something other than a string
    # (``yes``, ``1.10``, ``~``): type errors on them suggest quoting.
    unquoted: set[FieldPath] = field(default_factory=set)
    # Values replaced by a stand-in after a problem (an alias, a refused tag): further
    # complaints about them or anything under them would only repeat that problem.
    tainted: set[FieldPath] = field(default_factory=set)
    # String scalars whose text stands in the file exactly as read (plain or quoted, no
    # escapes, one line): the 1-based column of their first character, so a problem at an
    # offset inside the value (a glob's bad component) can point at its own column.
    verbatim: dict[FieldPath, int] = field(default_factory=dict)

    def is_tainted(self, path: FieldPath) -> bool:
        return any(path[:i] in self.tainted for i in range(len(path) + 1))

    def where(self, path: FieldPath, *, key: bool = False) -> tuple[int, int]:
        """The mark of ``path`` (its key with ``key``), else of its nearest ancestor."""
        if key and path in self.key_marks:
            return self.key_marks[path]
        for i in range(len(path), -1, -1):
            if path[:i] in self.marks:
                return self.marks[path[:i]]
        return (0, 0)

    def problem(self, path: FieldPath, message: str, *, key: bool = False) -> Problem:
        line, column = self.where(path, key=key)
        return Problem(self.filename, line, column, format_path(path), message)

    def problem_at(self, path: FieldPath, offset: int, message: str) -> Problem:
        """A problem at character ``offset`` of the string at ``path`` (its own column when
        the value is written verbatim, else the value's column)."""
        line, column = self.where(path)
        start = self.verbatim.get(path)
        if start is not None:
            column = start + offset
        return Problem(self.filename, line, column, format_path(path), message)


class _Stop(Exception):
    """A limit was exceeded or the syntax broke: the problem is recorded, stop composing."""


class _Composer:
    def __init__(
        self,
        doc: YamlDocument,
        stream: Iterator[events.Event],
        *,
        depth: int,
        nodes: int,
        chars: int,
        lines: list[str] | None = None,
    ) -> None:
        self.doc = doc
        self.lines = lines or []
        self.stream = stream
        self.max_depth = depth
        self.max_nodes = nodes
        self.max_chars = chars
        self.nodes = 0
        self.problems: list[Problem] = []

    def add(
        self, event: events.Event, path: FieldPath, message: str, *, taint: bool = False
    ) -> None:
        """Record a problem; ``taint`` when the value at ``path`` was replaced by a stand-in."""
        if taint:
            self.doc.tainted.add(path)
        line, column = _mark(event)
        self.problems.append(Problem(self.doc.filename, line, column, format_path(path), message))
        if len(self.problems) >= MAX_PROBLEMS:
            self.problems.append(
                Problem(self.doc.filename, 0, 0, "", f"more than {MAX_PROBLEMS} problems; stopped")
            )
            raise _Stop

    def next(self) -> events.Event:
        return next(self.stream)

    def node(self, event: events.Event, path: FieldPath, depth: int, record: bool) -> object:
        """Compose the node that starts with ``event``; ``record`` False for discarded ones."""
        self.nodes += 1
        if self.nodes > self.max_nodes:
            self.add(
                event,
                path,
                f"more than {self.max_nodes} YAML nodes; the limit is {self.max_nodes}",
            )
            raise _Stop
        if record:
            self.doc.marks[path] = _mark(event)
        if isinstance(event, events.AliasEvent):
            self.add(
                event,
                path,
                f"YAML alias *{event.anchor} is not allowed: aliases can "
                "expand exponentially (billion laughs); write the value out in full",
                taint=record,
            )
            return None
        assert isinstance(event, events.NodeEvent), event
        if event.anchor is not None:
            self.add(
                event,
                path,
                f"YAML anchor &{event.anchor} is not allowed; write the "
                "value out in full where it is needed",
            )
        if isinstance(event, events.ScalarEvent):
            return self.scalar(event, path, record)
        if depth >= self.max_depth:
            self.add(
                event,
                path,
                f"nested deeper than {self.max_depth} levels",
            )
            raise _Stop
        assert isinstance(event, events.CollectionStartEvent), event
        if event.tag not in _COLLECTION_TAGS:
            self.add(event, path, f"YAML tag {_short(event.tag)} is not allowed here", taint=record)
        if isinstance(event, events.SequenceStartEvent):
            items: list[object] = []
            while not isinstance(ev := self.next(), events.SequenceEndEvent):
                items.append(self.node(ev, (*path, len(items)), depth + 1, record))
            return items
        assert isinstance(event, events.MappingStartEvent), event
        return self.mapping(path, depth, record)

    def mapping(self, path: FieldPath, depth: int, record: bool) -> dict[str, object]:
        out: dict[str, object] = {}
        while not isinstance(kev := self.next(), events.MappingEndEvent):
            key = self.node(kev, path, depth + 1, record=False)
            keep = record
            if isinstance(kev, events.AliasEvent):
                keep = False  # already reported as an alias
            elif not isinstance(kev, events.ScalarEvent):
                self.add(kev, path, "a mapping or list is used as a key; keys must be strings")
                keep = False
            elif not isinstance(key, str):
                self.add(kev, path, f"key {show(key)} is not a string; quote it")
                keep = False
            elif key in out:
                first = self.doc.key_marks.get((*path, key), (0, 0))[0]
                self.add(
                    kev,
                    (*path, key),
                    f"duplicate key {key!r} (first at line {first}); each key may appear once",
                )
                keep = False
            value = self.node(self.next(), (*path, str(key)), depth + 1, keep)
            if keep and isinstance(key, str):
                out[key] = value
                self.doc.key_marks[(*path, key)] = _mark(kev)
        return out

    def scalar(self, event: events.ScalarEvent, path: FieldPath, record: bool) -> object:
        text = event.value
        if len(text) > self.max_chars:
            self.add(
                event,
                path,
                f"text of {len(text)} characters; the limit is {self.max_chars}",
            )
        tag = event.tag
        if tag == "!":  # the non-specific tag: a string (YAML 1.1 §3.3.2)
            tag = f"{_TAG}str"
        elif tag is None:
            tag = _RESOLVER.resolve(yaml.ScalarNode, text, event.implicit)
            if tag in _AS_TEXT:
                tag = f"{_TAG}str"
        if tag == f"{_TAG}timestamp":
            return text  # no manifest field is a date; keep what was written
        if tag not in _SCALAR_TAGS:
            self.add(
                event,
                path,
                f"YAML tag {_short(tag)} is not allowed; write a plain value",
                taint=record,
            )
            return text
        try:
            value: object = _CONSTRUCTOR.construct_object(yaml.ScalarNode(tag, text))
        except (ValueError, yaml.YAMLError) as e:
            self.add(
                event, path, f"cannot read {show(text)} as {tag[len(_TAG) :]}: {e}", taint=record
            )
            return text
        if record and not isinstance(value, str) and event.implicit[0]:
            self.doc.unquoted.add(path)
        if record and isinstance(value, str):
            self._note_verbatim(event, path, value)
        return value

    def _note_verbatim(self, event: events.ScalarEvent, path: FieldPath, value: str) -> None:
        mark = event.start_mark
        if mark is None or not value or not 0 <= mark.line < len(self.lines):
            return
        start = mark.column + (1 if event.style in ("'", '"') else 0)
        # Compared, not assumed: an escape, a folded line or a column counted differently
        # by the parser leaves the value's own column in place.
        if self.lines[mark.line][start : start + len(value)] == value:
            self.doc.verbatim[path] = start + 1


def _decode(data: str | bytes, filename: str) -> tuple[str | None, Problem | None]:
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: not text any file could hold
            line, column = _position(data, e.start)
            code = ord(data[e.start])
            return None, Problem(
                filename, line, column, "", f"lone surrogate U+{code:04X} is not valid text"
            )
        return data, None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        head = data[: e.start]
        line = head.count(b"\n") + 1
        column = e.start - (head.rfind(b"\n") + 1) + 1
        bad = data[e.start : e.start + 1].hex()
        return None, Problem(
            filename, line, column, "", f"not valid UTF-8 (byte 0x{bad}); save the file as UTF-8"
        )


def _position(text: str, offset: int) -> tuple[int, int]:
    head = text[:offset]
    return head.count("\n") + 1, offset - (head.rfind("\n") + 1) + 1


def compose(
    data: str | bytes,
    *,
    filename: str,
    max_bytes: int,
    max_depth: int,
    max_nodes: int,
    max_string_length: int,
) -> tuple[YamlDocument | None, list[Problem]]:
    """Compose one YAML document; the document is None when it could not be read at all.

    Problems that do not stop composing (an alias, a duplicate key) come back with the
    document; syntax errors and exceeded limits come back with None.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        return None, [
            Problem(
                filename,
                0,
                0,
                "",
                f"file is {size} bytes; the limit is {max_bytes}",
            )
        ]
    text, bad = _decode(data, filename)
    if text is None:
        return None, [bad] if bad else []
    doc = YamlDocument(filename)
    loader = _Loader(text)
    composer = _Composer(
        doc,
        _events(loader),
        depth=max_depth,
        nodes=max_nodes,
        chars=max_string_length,
        lines=text.split("\n"),
    )
    try:
        ok = _compose_stream(composer)
    except _Stop:
        ok = False
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(str(p) for p in (e.context, e.problem) if p)
        composer.problems.append(Problem(filename, line, column, "", f"YAML syntax error: {what}"))
        ok = False
    except yaml.reader.ReaderError as e:
        line, column = _position(text, e.position)
        composer.problems.append(
            Problem(filename, line, column, "", f"{e.reason} ({_char(e.character)}); remove it")
        )
        ok = False
    except yaml.YAMLError as e:  # no mark: report it as it is
        composer.problems.append(Problem(filename, 0, 0, "", f"cannot read YAML: {e}"))
        ok = False
    finally:
        loader.dispose()
    return (doc if ok else None), composer.problems


def _events(loader: Any) -> Iterator[events.Event]:  # Any: an instance of _Loader
    while loader.check_event():
        yield loader.get_event()


def _compose_stream(c: _Composer) -> bool:
    first = c.next()
    assert isinstance(first, events.StreamStartEvent), first
    ev = c.next()
    if isinstance(ev, events.StreamEndEvent):
        c.doc.marks[()] = (1, 1)
        return True  # an empty file: the value is None
    assert isinstance(ev, events.DocumentStartEvent), ev
    c.doc.value = c.node(c.next(), (), 0, record=True)
    end = c.next()
    assert isinstance(end, events.DocumentEndEvent), end
    ev = c.next()
    if not isinstance(ev, events.StreamEndEvent):
        c.add(ev, (), "more than one YAML document ('---'); a manifest is one document")
        return False
    return True
