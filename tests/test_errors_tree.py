"""Every public exception of powernode is under PowernodeError, and errors.py draws them all.

The test imports every module of the package (pkgutil.walk_packages), so an
exception class added anywhere is found; the tree in ``errors.py``'s
docstring is compared with the classes' real bases (structure only: the
words after a name are free). On a mismatch the message prints the tree as
it should be drawn.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator

import powernode
from powernode import errors
from powernode.errors import PowernodeError

# Run by alembic inside its own context, not importable on its own.
NOT_IMPORTABLE = {"powernode.platform.db.migrations.env"}

_LINE = re.compile(
    r"^(?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>[A-Z]\w+)(?: \((?P<mod>[\w.]+)\))?"
)


def modules() -> Iterator[str]:
    for info in pkgutil.walk_packages(powernode.__path__, "powernode."):
        if info.name not in NOT_IMPORTABLE:
            yield info.name


def public_exceptions() -> dict[str, type[BaseException]]:
    """``module.Class`` -> class, for every public exception class defined in powernode."""
    found: dict[str, type[BaseException]] = {}
    for name in modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == name
                and not attr.startswith("_")
            ):
                found[f"{name}.{obj.__qualname__}"] = obj
    return found


def label(cls: type[BaseException]) -> str:
    """How the tree names a class: bare in errors.py, ``Name (module)`` elsewhere."""
    if cls.__module__ == "powernode.errors":
        return cls.__name__
    return f"{cls.__name__} ({cls.__module__.removeprefix('powernode.')})"


def tree_parent(cls: type[BaseException]) -> type[BaseException] | None:
    """The first base that is a PowernodeError: where the class hangs in the tree."""
    return next((b for b in cls.__bases__ if issubclass(b, PowernodeError)), None)


def expected_edges(found: dict[str, type[BaseException]]) -> set[tuple[str, str]]:
    return {
        (label(parent), label(cls))
        for cls in found.values()
        if (parent := tree_parent(cls)) is not None
    }


def drawn_edges(doc: str) -> set[tuple[str, str]]:
    """(parent, child) pairs of the tree drawn in a docstring (indentation is depth)."""
    edges: set[tuple[str, str]] = set()
    stack: list[str] = []
    block = doc.split("::", 1)[1]
    for line in block.splitlines():
        text = line[4:] if line.startswith("    ") else ""
        m = _LINE.match(text)
        if not m:
            continue
        depth = len(m["indent"]) // 4 + (1 if "──" in text[: len(m["indent"]) + 4] else 0)
        name = m["name"] + (f" ({m['mod']})" if m["mod"] else "")
        del stack[depth:]
        if stack:
            edges.add((stack[-1], name))
        stack.append(name)
    return edges


def render(found: dict[str, type[BaseException]]) -> str:
    children: dict[str, list[str]] = {}
    for parent, child in sorted(expected_edges(found)):
        children.setdefault(parent, []).append(child)
    out = ["PowernodeError"]

    def walk(name: str, prefix: str) -> None:
        kids = children.get(name, [])
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            out.append(f"{prefix}{'└── ' if last else '├── '}{kid}")
            walk(kid, prefix + ("    " if last else "│   "))

    walk("PowernodeError", "")
    return "\n".join(out)


def test_every_public_exception_is_a_powernode_error() -> None:
    found = public_exceptions()
    assert len(found) > 50  # the walk did find the package's modules
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, PowernodeError))
    assert outside == [], f"not under PowernodeError: {outside}"


def test_errors_py_draws_the_whole_tree() -> None:
    found = public_exceptions()
    assert errors.__doc__ is not None
    drawn, expected = drawn_edges(errors.__doc__), expected_edges(found)
    assert drawn == expected, (
        f"missing from the drawing: {sorted(expected - drawn)}; "
        f"drawn but not so: {sorted(drawn - expected)}; the tree is:\n{render(found)}"
    )


def test_a_class_outside_the_tree_is_caught() -> None:
    class Stray(Exception):
        pass

    Stray.__module__ = "powernode.example"
    found = {"powernode.example.Stray": Stray, **public_exceptions()}
    assert [n for n, c in found.items() if not issubclass(c, PowernodeError)] == [
        "powernode.example.Stray"
    ]
    assert ("PowernodeError", "Stray (example)") not in drawn_edges(errors.__doc__ or "")
