"""Paths the agent receives from the platform or an artifact, checked before use (pure).

Issue 13, item 7: a ``composition.dropped`` entry ``/../../X`` once made
``modules sync`` create a device node outside its run directory, as root.
Every path that names a place in the node's tree (the composition's union,
dropped and takeover paths) is checked here at the boundary, before anything
is written, and refused with the field that carried it:

- a string, absolute (``/`` first), at most ``MAX_PATH`` bytes in UTF-8
  (Linux ``PATH_MAX``, 4096, including the terminating NUL it will get);
- no NUL (the kernel would cut the path there);
- normalised: no empty, ``.`` or ``..`` segment (``//``, ``/./``,
  ``/../``), so the path means what it says without resolution; each
  segment at most ``MAX_NAME`` bytes (``NAME_MAX``, 255);
- one trailing ``/`` only where a directory is meant (the union's
  directory entries, docs/composition.md).

A checked path is still only a name: the files are made beneath their root
without following links (:mod:`powernode.agent.beneath`), since a link can
come from an image, not only from a path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from powernode.errors import DataError

if TYPE_CHECKING:
    from powernode.core.composition import Composition

MAX_PATH = 4095  # bytes; PATH_MAX (4096) counts the NUL
MAX_NAME = 255  # bytes per segment; NAME_MAX


def check_node_path(value: object, where: str, *, directory: bool = False) -> str:
    """``value`` if it is an absolute, normalised, bounded path; DataError naming ``where``.

    ``directory``: a trailing ``/`` is allowed (a union directory entry).
    """
    if not isinstance(value, str):
        raise DataError(f"{where}: expected a path string, got {type(value).__name__}")
    shown = value if len(value) <= 80 else value[:77] + "..."
    if "\0" in value:
        raise DataError(f"{where}: path {shown!r} contains a NUL byte; refused")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH:
        raise DataError(f"{where}: path of {size} bytes is over the {MAX_PATH}-byte limit")
    if not value.startswith("/"):
        raise DataError(f"{where}: path {shown!r} is not absolute (must start with '/')")
    segments = node_path_segments(value, directory=directory)
    for seg in segments:
        if seg in ("", ".", ".."):
            what = "an empty" if not seg else f"a {seg!r}"
            raise DataError(
                f"{where}: path {shown!r} has {what} segment; only normalised paths are "
                "taken (no '//', '/./' or '/../')"
            )
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_NAME:
            raise DataError(f"{where}: path {shown!r} has a segment over {MAX_NAME} bytes")
    return value


def node_path_segments(path: str, *, directory: bool = False) -> list[str]:
    """The segments of an absolute ``path`` (``/`` alone has none); not checked."""
    body = path[1:]
    if directory and body.endswith("/"):
        body = body[:-1]
    return body.split("/") if body else []


def check_composition_paths(composition: Composition, where: str = "composition") -> Composition:
    """``composition`` if every path in it passes :func:`check_node_path`; else DataError.

    The error names the entry and field (``composition: dropped[3].path: …``).
    Patterns are globs, not paths, and are not checked here.
    """
    for i, u in enumerate(composition.union):
        check_node_path(u.path, f"{where}: union[{i}].path", directory=True)
    for i, d in enumerate(composition.dropped):
        check_node_path(d.path, f"{where}: dropped[{i}].path")
    for i, t in enumerate(composition.takeovers):
        check_node_path(t.path, f"{where}: takeovers[{i}].path")
    return composition
