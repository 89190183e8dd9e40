"""Shell completion for both command lines, through the protocol bash uses.

The script ``--show-completion bash`` prints calls the program again with
``_<PROG>_COMPLETE=complete_bash``, ``COMP_WORDS`` and ``COMP_CWORD``; here a
fresh interpreter runs each CLI's ``main()`` exactly so, and the words it prints
are the real subcommands.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MAIN = "powernode.cli.main"
AGENT = "powernode.cli.agent"


def complete(module: str, var: str, words: str) -> list[str]:
    """What bash would offer for ``words`` (the cursor at its end)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {**os.environ, var: "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    out = subprocess.run(
        [sys.executable, "-c", f"from {module} import main; main()"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("powernode ", {"system", "platform", "module", "mcp", "demo", "version"}),
        ("powernode sy", {"system"}),
        ("powernode system list-", {"list-modules", "list-instances", "list-templates"}),
        ("powernode platform ", {"serve", "migrate", "token"}),
        ("powernode mcp ", {"serve"}),
    ],
)
def test_powernode_completes_its_commands(words: str, expected: set[str]) -> None:
    got = complete(MAIN, "_POWERNODE_COMPLETE", words)
    assert expected <= set(got), got
    prefix = words.rsplit(maxsplit=1)[-1] if not words.endswith(" ") else ""
    assert all(w.startswith(prefix) for w in got), got


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("powernode-agent ", {"service", "enroll", "status", "modules", "version"}),
        ("powernode-agent en", {"enroll"}),
    ],
)
def test_the_agent_completes_its_commands(words: str, expected: set[str]) -> None:
    got = complete(AGENT, "_POWERNODE_AGENT_COMPLETE", words)
    assert expected <= set(got), got


def test_an_unknown_word_completes_to_nothing() -> None:
    assert complete(MAIN, "_POWERNODE_COMPLETE", "powernode no-such-") == []


@pytest.mark.parametrize(
    ("module", "prog", "var"),
    [
        (MAIN, "powernode", "_POWERNODE_COMPLETE"),
        (AGENT, "powernode-agent", "_POWERNODE_AGENT_COMPLETE"),
    ],
)
def test_show_completion_prints_the_bash_script(module: str, prog: str, var: str) -> None:
    argv = [prog, "--show-completion", "bash"]
    code = f"import sys; sys.argv = {argv!r}; from {module} import main; main()"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert f"{var}=complete_bash" in out.stdout
    assert f"complete -o default -F _{prog.replace('-', '_')}_completion {prog}" in out.stdout
