"""Every `$` command in README.md's console blocks runs, and prints what the README shows.

The commands run with the project's console scripts first on PATH, in a
temporary directory holding a copy of ``examples/`` (so the README's relative
paths work and nothing is written into the checkout). The lines shown under a
command must each appear, in order, in what it printed (stdout and stderr;
Rich tables are compared with runs of spaces collapsed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.package_cache import EPOCH, session_cache

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Example:
    command: str
    expected: tuple[str, ...]
    line: int


def console_examples(text: str) -> list[Example]:
    """The `$ command` lines of ```console blocks and the output lines under each."""
    out: list[Example] = []
    in_block = False
    current: tuple[str, list[str], int] | None = None
    for no, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if in_block and current is not None:
                out.append(Example(current[0], tuple(current[1]), current[2]))
                current = None
            in_block = line.strip() == "```console" and not in_block
            continue
        if not in_block:
            continue
        if line.startswith("$ "):
            if current is not None:
                out.append(Example(current[0], tuple(current[1]), current[2]))
            current = (line[2:], [], no)
        elif current is not None and line.strip():
            current[1].append(line)
    return out


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_readme_has_examples() -> None:
    # The parser finds the tour; an empty list would make the next test vacuous.
    examples = console_examples(README.read_text(encoding="utf-8"))
    assert len(examples) >= 6
    assert all(e.command.startswith("powernode") for e in examples)


def test_console_examples_parser_keeps_outputs_with_their_command() -> None:
    text = "x\n```console\n$ a\none\n$ b\n```\n```sh\n$ c\n```\n"
    assert console_examples(text) == [Example("a", ("one",), 3), Example("b", (), 5)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", d / "examples", symlinks=True)
    return d


def installs_packages(e: Example) -> bool:
    """A `module build` that runs mmdebstrap (slow, needs the Debian mirror)."""
    return "module build" in e.command and "--no-packages" not in e.command


PACKAGE_MARKS = [pytest.mark.slow, pytest.mark.tool, pytest.mark.timeout(1800)]


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(e, marks=PACKAGE_MARKS if installs_packages(e) else [])
        for e in console_examples(README.read_text(encoding="utf-8"))
    ],
    ids=lambda e: f"README.md:{e.line}",
)
def test_readme_example(
    example: Example, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"  # wide enough that Rich tables do not ellipsise cells
    env["TERM"] = "dumb"
    if installs_packages(example):
        # the copy of examples/ is no git checkout: the epoch the example builds share;
        # the package trees are the session's (tests/package_cache.py), built once
        env["SOURCE_DATE_EPOCH"] = str(EPOCH)
        env["XDG_CACHE_HOME"] = str(session_cache(tmp_path_factory).parents[1])
    proc = subprocess.run(
        ["bash", "-c", example.command],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800 if installs_packages(example) else 120,
        check=False,
    )
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"README.md:{example.line}: {example.command}\n{printed}"
    flat = squash(printed.replace("│", " ").replace("┃", " "))
    pos = 0
    for want in example.expected:
        needle = squash(want.replace("│", " "))
        found = flat.find(needle, pos)
        assert found >= 0, (
            f"README.md:{example.line}: {example.command!r} did not print {want!r}"
            f" (after position {pos}):\n{printed}"
        )
        pos = found + len(needle)
