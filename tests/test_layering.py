"""The layering contracts (.importlinter) hold, and each one fails on a deliberate violation.

Each case copies ``src/powernode`` to a temporary directory, appends one
import that breaks one contract to one module, runs ``lint-imports`` on the
copy and checks that exactly that contract is reported broken. The clean
tree passes every contract.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONFIG = ROOT / ".importlinter"


def contract_names(config: Path) -> list[str]:
    return re.findall(r"^name = (.+)$", config.read_text(), flags=re.M)


def lint(tree: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the package under ``tree`` (its own ``powernode``)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "400"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(config)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def copy_tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "powernode",
        tmp_path / "powernode",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def broken(out: str) -> list[str]:
    return [line.removesuffix(" BROKEN").strip() for line in out.splitlines() if "BROKEN" in line]


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    """Contract id -> name, from the config."""
    text = CONFIG.read_text()
    return dict(re.findall(r"^\[importlinter:contract:([\w-]+)\]\nname = (.+)$", text, flags=re.M))


def test_the_tree_keeps_every_contract(tmp_path: Path, names: dict[str, str]) -> None:
    result = lint(copy_tree(tmp_path), CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(names)} kept, 0 broken." in result.stdout


# contract id, module file that gets the import, the import
VIOLATIONS = [
    ("core", "core/semver.py", "import powernode.durable"),
    ("infrastructure", "durable.py", "import powernode.core.semver"),
    ("agent", "agent/textfile.py", "import powernode.platform.settings"),
    ("platform", "platform/settings.py", "import powernode.agent.config"),
    # a module only the CLI uses: a violation elsewhere in a format also breaks the
    # contracts of the runtimes that import it (forbidden imports are transitive)
    ("formats", "verity/composefs/reader/dump.py", "import powernode.platform.problems"),
    ("toolchain", "toolchain/probe.py", "import powernode.platform.problems"),
    ("operator-client", "client.py", "import powernode.platform.settings"),
    ("cli", "demo/fleet.py", "import powernode.cli.base"),
    # a new module of node/ that nothing imports: the others import node/, so a violation
    # in an existing one also breaks their contracts (forbidden imports are transitive)
    ("node", "node/probe.py", "import powernode.platform.settings"),
]


def test_every_contract_has_a_violation_case(names: dict[str, str]) -> None:
    assert sorted(c for c, _, _ in VIOLATIONS) == sorted(names)


@pytest.mark.parametrize(
    ("contract", "module", "statement"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS]
)
def test_a_violation_breaks_its_contract(
    tmp_path: Path, names: dict[str, str], contract: str, module: str, statement: str
) -> None:
    tree = copy_tree(tmp_path)
    target = tree / "powernode" / module
    with target.open("a") as f:  # at the end: after `from __future__`, and grimp reads it all
        f.write(f"\n{statement}  # deliberate violation\n")
    result = lint(tree, CONFIG)
    assert result.returncode != 0
    assert broken(result.stdout) == [names[contract]], result.stdout
    assert f"Contracts: {len(names) - 1} kept, 1 broken." in result.stdout


# --- only the CLI prints or exits (STYLE.md rule 11) ------------------------------------

SRC = ROOT / "src" / "powernode"

# (file under src/powernode, what) -> why it may
EXIT_EXEMPT = {
    ("verity/composefs/scan_procs.py", "os._exit"): (
        "a forked scan worker must leave without running the parent's atexit handlers "
        "or flushing its copied buffers (fork(2) children end with _exit)"
    ),
    ("verity/fsverity_procs.py", "os._exit"): (
        "a forked hashing worker: the same reason; the parent reads its exit code"
    ),
}

_EXITS = {("sys", "exit"), ("os", "_exit"), ("typer", "Exit"), ("typer", "Abort")}


def prints_and_exits(source: str) -> list[tuple[int, str]]:
    """(line, what) for each print(), sys.exit, os._exit, raise SystemExit or typer.Exit."""
    found = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("print", "exit", "quit"):
                what = f"{f.id}("
            elif (
                isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name)
                and (f.value.id, f.attr) in _EXITS
            ):
                what = f"{f.value.id}.{f.attr}"
        elif isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                what = "raise SystemExit"
        if what is not None:
            found.append((node.lineno, what))
    return found


def library_modules() -> list[Path]:
    return [
        p
        for p in sorted(SRC.rglob("*.py"))
        if p.relative_to(SRC).parts[0] != "cli" and p.name != "__main__.py"
    ]


def test_only_the_cli_prints_or_exits() -> None:
    offenders, used = [], set()
    for path in library_modules():
        rel = path.relative_to(SRC).as_posix()
        for line, what in prints_and_exits(path.read_text(encoding="utf-8")):
            if (rel, what) in EXIT_EXEMPT:
                used.add((rel, what))
            else:
                offenders.append(f"{rel}:{line}: {what}")
    assert offenders == [], "libraries log and raise; only cli/ prints or exits"
    assert used == set(EXIT_EXEMPT), f"exemptions no longer needed: {set(EXIT_EXEMPT) - used}"


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("print('hi')", "print("),
        ("import sys\nsys.exit(2)", "sys.exit"),
        ("import os\nos._exit(0)", "os._exit"),
        ("raise SystemExit(1)", "raise SystemExit"),
        ("raise SystemExit", "raise SystemExit"),
        ("import typer\nraise typer.Exit(code=1)", "typer.Exit"),
    ],
    ids=["print", "sys.exit", "os._exit", "SystemExit", "SystemExit-bare", "typer.Exit"],
)
def test_the_print_finder_finds_each_kind(source: str, what: str) -> None:
    assert [w for _, w in prints_and_exits(source)] == [what]


# --- no module loaded by a string ------------------------------------------------------

# Files allowed a string import, each with its reason (none: the artifact seam is typed).
STRING_IMPORTS_PENDING: set[str] = set()


def string_imports(source: str) -> list[int]:
    """Lines calling ``importlib.import_module``, ``import_module`` or ``__import__``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__"):
                lines.append(node.lineno)
    return lines


def test_no_module_is_imported_by_a_string() -> None:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if lines := string_imports(path.read_text(encoding="utf-8")):
            found[rel] = lines
    assert sorted(set(found) - STRING_IMPORTS_PENDING) == [], found
    assert set(found) == STRING_IMPORTS_PENDING, "done: empty STRING_IMPORTS_PENDING"


def test_the_string_import_finder_finds_each_form() -> None:
    source = "import importlib\nimportlib.import_module('a')\n__import__('b')\n"
    assert string_imports(source) == [2, 3]


# --- Any, counted ---------------------------------------------------------------------

# Issue 14: annotations using Any in src/ stay under TARGET (about 260 before it), and
# every one says why on its line (`# Any: <reason>`).
TARGET = 80
LIMIT = TARGET - 1
UNEXPLAINED_LIMIT = 0
_REASON = re.compile(r"#\s*Any:\s*\S")


def _uses_any(annotation: ast.expr) -> bool:
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id == "Any":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "Any":
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:  # a quoted annotation: "dict[str, Any]"
                inner = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                continue
            if _uses_any(inner):
                return True
    return False


def any_annotations(source: str) -> list[tuple[int, bool]]:
    """(line, has a reason) of each annotation using Any: arguments, returns, variables."""
    lines = source.splitlines()
    found: list[tuple[int, bool]] = []

    def note(annotation: ast.expr | None) -> None:
        if annotation is not None and _uses_any(annotation):
            line = annotation.lineno
            found.append((line, bool(_REASON.search(lines[line - 1]))))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None:
                    note(arg.annotation)
            note(node.returns)
        elif isinstance(node, ast.AnnAssign):
            note(node.annotation)
    return found


def any_counts() -> dict[str, list[tuple[int, bool]]]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        if found := any_annotations(path.read_text(encoding="utf-8")):
            out[path.relative_to(SRC).as_posix()] = found
    return out


def test_any_annotations_are_few() -> None:
    counts = any_counts()
    total = sum(len(v) for v in counts.values())
    worst = sorted(counts, key=lambda k: -len(counts[k]))[:10]
    assert total <= LIMIT, (
        f"{total} annotations use Any (limit {LIMIT}, target {TARGET}); "
        f"most in: {[(k, len(counts[k])) for k in worst]}"
    )
    assert LIMIT < TARGET  # issue 14: under 80


def test_any_annotations_say_why() -> None:
    unexplained = [
        f"{path}:{line}" for path, found in any_counts().items() for line, ok in found if not ok
    ]
    assert len(unexplained) <= UNEXPLAINED_LIMIT, unexplained[:20]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(x: Any) -> None: ...", [(1, False)]),
        ("def f(*a: Any, **k: Any) -> None: ...", [(1, False), (1, False)]),
        ("def f() -> dict[str, Any]: ...", [(1, False)]),
        ("x: list[typing.Any] = []", [(1, False)]),
        ("def f(x: 'Mapping[str, Any]') -> int: ...", [(1, False)]),
        ("def f(\n    x: Any,  # Any: typer's own type\n) -> None: ...", [(2, True)]),
        ("def f(x: object) -> None: ...", []),
    ],
    ids=["arg", "star-args", "nested-return", "variable", "quoted", "with-reason", "none"],
)
def test_the_any_counter_counts_each_form(source: str, expected: list[tuple[int, bool]]) -> None:
    assert sorted(any_annotations(source)) == expected
