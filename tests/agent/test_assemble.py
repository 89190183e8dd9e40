"""The agent's composition root (agent/assemble.py) and its view (agent/view.py).

The CLI only calls these: the runtime and the module service come out built
from the config, rotation state is computed in the agent, and the ``modules``
subcommands no longer import the agent's CLI module.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from powernode.agent.assemble import (
    build_module_service,
    build_puller,
    build_runtime,
    load_agent_config,
    node_layout,
)
from powernode.agent.certstore import CertInfo
from powernode.agent.config import AgentConfig
from powernode.agent.join import join, read_token
from powernode.agent.lifecycle import ManualClock, StopSignal
from powernode.agent.spool import Spool
from powernode.agent.view import agent_view, certificate_view
from powernode.cli.agent import modules as modules_cli
from powernode.errors import ConfigError
from tests.agent.fakeplatform import FakePlatform, enrolled_agent

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def config(
    tmp_path: Path, platform_url: str | None = None, modules_root: Path | None = None
) -> AgentConfig:
    return load_agent_config(
        None, state_dir=tmp_path / "state", platform_url=platform_url, modules_root=modules_root
    )


def test_the_runtime_is_built_from_the_config_with_its_module_service(tmp_path: Path) -> None:
    cfg = enrolled_agent(tmp_path, FakePlatform(ManualClock(datetime.now(UTC))))
    stop = StopSignal()
    runtime = build_runtime(cfg, stop)
    try:
        assert runtime.config is cfg
        assert runtime.modules is not None
        assert runtime.modules.layout.state == (tmp_path / "state").absolute()
        assert "modules.sync" in runtime.executor.registry.kinds()  # type: ignore[attr-defined]
    finally:
        runtime.spool.close()


def test_the_runtime_needs_a_platform_url_and_builds_nothing_without_one(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with pytest.raises(ConfigError, match="platform_url is not set"):
        build_runtime(cfg)
    assert not (tmp_path / "state").exists()


def test_the_module_service_and_puller_follow_the_config(tmp_path: Path) -> None:
    cfg = config(tmp_path, modules_root=tmp_path / "root")
    assert node_layout(cfg).root == (tmp_path / "root").absolute()
    puller = build_puller(cfg, unsafe_no_signature=True)
    assert puller.unsafe_no_signature is True
    spool = Spool(tmp_path / "events.db", max_events=100, max_payload_bytes=1024)
    try:
        service = build_module_service(cfg, spool, ManualClock(T0))
        assert service.layout == node_layout(cfg)
    finally:
        spool.close()


def test_rotation_state_is_computed_in_the_agent() -> None:
    info = CertInfo("i", T0, T0 + timedelta(days=90), 1, "ab")
    early = certificate_view(info, T0 + timedelta(days=1), 0.75, [])
    assert early["rotation_due"] is False and early["expired"] is False
    assert early["rotate_after"] == "2025-03-09T12:00:00Z"
    assert early["seconds_left"] == 89 * 86400
    late = certificate_view(info, T0 + timedelta(days=91), 0.75, ["old.pem"])
    assert (late["rotation_due"], late["expired"], late["seconds_left"]) == (True, True, 0)
    assert late["archived"] == ["old.pem"]


def test_the_view_of_an_unenrolled_agent(tmp_path: Path) -> None:
    view = agent_view(config(tmp_path), with_identity=False)
    assert view["enrolled"] is False and view["certificate"] is None
    assert view["buffer"] == {"events": 0, "outcomes": 0}
    assert "identity" not in view


def test_the_modules_commands_do_not_import_the_agent_cli() -> None:
    """The circle is gone: the modules group builds its objects through agent/assemble.py,
    not through the agent CLI's helpers (cli/agent/ is now the package both live in)."""
    source = Path(modules_cli.__file__).read_text()
    assert "from powernode.cli.agent import" not in source
    assert "import powernode.cli.agent\n" not in source
    assert "powernode.agent.assemble" in source


def test_the_bootstrap_token_comes_from_a_file_stdin_or_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("pbt_abc\n")
    empty: dict[str, str] = {}
    assert read_token(f, stdin=io.StringIO(), environ=empty) == "pbt_abc"
    assert read_token(Path("-"), stdin=io.StringIO(" pbt_in \n"), environ=empty) == "pbt_in"
    env = {"POWERNODE_AGENT_BOOTSTRAP_TOKEN": "pbt_env"}
    assert read_token(None, stdin=io.StringIO(), environ=env) == "pbt_env"


@pytest.mark.parametrize(
    ("where", "content", "message"),
    [
        ("env", None, "no bootstrap token: pass --token-file FILE"),
        ("missing", None, "cannot read the token"),
        ("file", "   \n", "the bootstrap token is empty"),
        ("file", "two words", "not a bootstrap token"),
    ],
)
def test_a_bad_token_is_refused_naming_where_it_came_from(
    tmp_path: Path, where: str, content: str | None, message: str
) -> None:
    f = tmp_path / "token"
    if content is not None:
        f.write_text(content)
    token_file = None if where == "env" else f
    with pytest.raises(ConfigError, match=message) as e:
        read_token(token_file, stdin=io.StringIO(), environ={})
    if token_file is not None:
        assert str(f) in str(e.value)


def test_joining_without_a_platform_ca_or_url_says_what_to_set(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("pbt_abc")
    io_kw = {"stdin": io.StringIO(), "environ": {}}
    with pytest.raises(ConfigError, match="platform_url is not set"):
        join(config(tmp_path), f, **io_kw)  # type: ignore[arg-type]
    cfg = config(tmp_path, platform_url="https://127.0.0.1:1")
    with pytest.raises(ConfigError, match="no platform CA: pass --platform-ca FILE"):
        join(cfg, f, **io_kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot read the platform CA"):
        join(cfg, f, platform_ca=tmp_path / "absent.pem", **io_kw)  # type: ignore[arg-type]
    assert not (tmp_path / "state" / "pki").exists()  # nothing written
