"""``--help`` loads no heavy stack (issue 12 item 5, STYLE rule 15).

Each case starts a fresh interpreter that imports a CLI, runs its ``main()``
with ``--help`` in-process and lists which of the heavy modules got loaded:
the web framework, the ORM, the registry client, cryptography's OpenSSL
backend, the HTTP client, the ASGI server — and Rich and pydantic, which
typer would load for help rendering and option coercion.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import typer.main

from powernode.cli.agent import app as agent_app
from powernode.cli.base import LazyCommands, PlainGroup
from powernode.cli.main import app

HEAVY = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "httpx",
    "powernode.oci.distribution",
    "powernode.platform",
    "powernode.publish",
    "powernode.signing",
    "cryptography.hazmat.backends.openssl",
    "cryptography.hazmat.bindings._rust",
    "nacl",
    "rich",
    "pydantic",
)
MAIN = "powernode.cli.main"
AGENT = "powernode.cli.agent"
PROBE = """
import json, sys
from {module} import main
sys.argv = ["prog", *{args!r}]
try:
    main()
except SystemExit as e:
    code = e.code
heavy = {heavy!r}
print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}))
"""

CASES = [
    pytest.param(MAIN, [], id="powernode"),
    pytest.param(MAIN, ["module"], id="powernode-module"),
    pytest.param(MAIN, ["system"], id="powernode-system"),
    pytest.param(MAIN, ["platform"], id="powernode-platform"),
    pytest.param(MAIN, ["platform", "token"], id="powernode-platform-token"),
    pytest.param(MAIN, ["verity"], id="powernode-verity"),
    pytest.param(MAIN, ["composefs"], id="powernode-composefs"),
    pytest.param(MAIN, ["composefs", "info"], id="powernode-composefs-info"),
    pytest.param(AGENT, [], id="powernode-agent"),
    pytest.param(AGENT, ["modules"], id="powernode-agent-modules"),
]


def probe(module: str, args: list[str]) -> dict[str, Any]:
    code = PROBE.format(module=module, args=[*args, "--help"], heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


@pytest.mark.parametrize(("module", "args"), CASES)
def test_help_loads_no_heavy_stack(module: str, args: list[str]) -> None:
    result = probe(module, args)
    assert result["code"] in (0, None)
    assert result["loaded"] == []


def test_the_probe_sees_a_heavy_import() -> None:
    """The check can fail: a command that runs the registry client loads it."""
    code = PROBE.format(
        module=MAIN, args=["module", "pull", "--help"], heavy=("powernode.oci.distribution",)
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out.splitlines()[-1])["loaded"] == ["powernode.oci.distribution"]


def _lazy_groups(group: Any, path: str) -> list[tuple[str, Any, str]]:
    """(path, group, name) of every lazily listed subcommand, loading each as it goes."""
    out: list[tuple[str, Any, str]] = []
    commands = group.commands
    for name in list(commands):
        if isinstance(commands, LazyCommands) and not commands.is_loaded(name):
            out.append((path, group, name))
        sub = commands[name]
        if isinstance(sub, PlainGroup):
            out.extend(_lazy_groups(sub, f"{path} {name}"))
    return out


@pytest.mark.parametrize(
    ("root", "prog"), [(app, "powernode"), (agent_app, "powernode-agent")], ids=["main", "agent"]
)
def test_lazy_help_strings_are_the_commands_own(root: typer.Typer, prog: str) -> None:
    """The one-line help listed without importing a command is its own first line."""
    entries = _lazy_groups(typer.main.get_command(root), prog)
    assert entries
    for path, group, name in entries:
        listed = group.commands.short_help(name)
        own = (group.commands[name].help or "").strip().splitlines()[0]
        assert listed == own, f"{path} {name}"
