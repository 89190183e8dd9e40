"""The two console scripts exist and answer."""

from __future__ import annotations

from typer.testing import CliRunner

from powernode import __version__
from powernode.cli.agent import app as agent_app
from powernode.cli.main import app


def test_powernode_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == __version__


def test_agent_version() -> None:
    result = CliRunner().invoke(agent_app, ["version"])
    assert result.exit_code == 0
    # the version, then the build information (tests/agent/test_node_commands.py)
    assert result.output.startswith(f"powernode-agent {__version__} (git ")


def test_unknown_command_is_an_error() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code != 0
