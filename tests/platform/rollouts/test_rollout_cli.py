"""`powernode system rollout start/status/pause/resume/abort` against the in-process app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from powernode.cli.system import Remote
from powernode.cli.system import app as system_app
from tests.platform.nodeapi.conftest import NodePlatform
from tests.platform.rollouts.fleet import digest, make_fleet
from tests.platform.test_drift_cli import PortalTransport
from tests.platform.test_preview import publish

runner = CliRunner()


def cli(p: NodePlatform, *args: str, role: str = "admin") -> tuple[int, str]:
    remote = Remote("http://platform.test", p.tokens[role], PortalTransport(p.portal, p.app))
    r = runner.invoke(system_app, ["rollout", *args], obj=remote)
    return r.exit_code, r.output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rollout_commands(node_platform: NodePlatform) -> None:
    p = node_platform
    fleet = make_fleet(p, count=4)
    new = publish(p, "app", "2.0.0", files=["/etc/app.conf"], digest=digest("2.0.0"))
    policy = json.dumps({"waves": [{"percent": 50}, {"percent": 50}]})
    code, out = cli(p, "start", new["id"], "--policy", policy, "--json")
    assert code == 0, out
    rid = json.loads(out)["rollout"]["id"]
    fleet.sync()
    code, out = cli(p, "status", rid)
    assert code == 0, out
    assert f"{rid}  running  wave 1/2" in out
    assert "wave 1: admitted 2" in out and "wave 2: pending 2" in out
    code, out = cli(p, "pause", rid)
    assert code == 0 and "paused" in out, out
    code, out = cli(p, "pause", rid)
    assert code != 0 and "it is paused" in out, out
    code, out = cli(p, "resume", rid)
    assert code == 0 and "running" in out, out
    code, out = cli(p, "abort", rid)
    assert code == 0 and "aborted" in out, out
    assert set(fleet.served().values()) == {"1.0.0"}
    code, out = cli(p, "status")
    assert code == 0 and f"{rid}  aborted" in out, out
    code, out = cli(p, "start", new["id"], "--policy", "{not json")
    assert code != 0 and "--policy is not JSON" in out, out
