"""The agent's settings: defaults < file < environment < overrides, each bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.agent.config import AgentConfig, load_config
from powernode.errors import ConfigError


def _file(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "agent.toml"
    f.write_text(text, encoding="utf-8")
    return f


def test_defaults() -> None:
    c = load_config(env={})
    assert c == AgentConfig()
    assert (c.heartbeat_seconds, c.lease_max, c.pki_dir) == (
        30.0,
        4,
        Path("/persist/var/lib/powernode/pki"),
    )


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    f = _file(
        tmp_path,
        'platform_url = "https://p.example:8400/"\nheartbeat_seconds = 5\nlease_max = 2\n'
        'state_dir = "/var/lib/x"\n',
    )
    env = {"POWERNODE_AGENT_HEARTBEAT_SECONDS": "7.5", "POWERNODE_AGENT_LEASE_MAX": "9"}
    c = load_config(f, env, lease_max=3, drain_seconds=None)
    assert c.platform_url == "https://p.example:8400"  # trailing slash dropped
    assert c.heartbeat_seconds == 7.5  # the environment is text, converted
    assert c.lease_max == 3  # an explicit override wins; None overrides are ignored
    assert c.state_dir == Path("/var/lib/x")
    assert c.drain_seconds == 60.0


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("surprise = 1\n", {}, "unknown setting(s) surprise"),
        ("heartbeat_seconds = 0\n", {}, "heartbeat_seconds: must be > 0, got 0"),
        ('lease_max = "many"\n', {}, "lease_max: expected an integer, got 'many'"),
        ('platform_url = "http://p:8400"\n', {}, "is not an https:// URL"),
        ('modules_registry = "p:5000"\n', {}, "write the registry as http(s)://host[:port]"),
        ("heartbeat_seconds = \n", {}, "not valid TOML"),
    ],
)
def test_bad_values_are_named_with_the_file(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    f = _file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(f, env)
    assert message in str(e.value)
    assert str(f) in str(e.value)


def test_every_problem_at_once(tmp_path: Path) -> None:
    f = _file(tmp_path, "heartbeat_seconds = -1\nflush_batch = 501\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, {})
    assert "heartbeat_seconds" in str(e.value) and "flush_batch" in str(e.value)


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        pytest.param(
            {"POWERNODE_AGENT_LEASE_MAX": "1000"},
            {},
            "POWERNODE_AGENT_LEASE_MAX: must be <= 100, got 1000",
            id="env",
        ),
        pytest.param(
            {},
            {"platform_url": "http://p:8400"},
            "--platform-url: 'http://p:8400' is not an https:// URL",
            id="flag",
        ),
    ],
)
def test_a_bad_value_is_blamed_on_where_it_came_from(
    tmp_path: Path, env: dict[str, str], overrides: dict[str, str], message: str
) -> None:
    """Regression (issue 12): a bad POWERNODE_AGENT_LEASE_MAX was blamed on the file."""
    f = _file(tmp_path, "lease_max = 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, env, **overrides)
    assert str(e.value).startswith(message)
    assert str(f) not in str(e.value)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read agent config"):
        load_config(tmp_path / "absent.toml", {})


def test_platform_url_required_when_used() -> None:
    with pytest.raises(ConfigError, match="POWERNODE_AGENT_PLATFORM_URL"):
        AgentConfig().require_platform()
