"""Init actions declared in a module's manifest: run on attach, upgrade and detach by a
real sync (signed pulls, mounts), and on demand by ``powernode-agent init MODULE ACTION``."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from powernode.agent.initactions import parse_actions
from powernode.agent.migration import state_dir
from powernode.cli.agent import app
from powernode.errors import DataError
from tests.agent.test_migration import publish, sync
from tests.agent.test_modules_registry import Node, node

__all__ = ["node"]

pytestmark = [pytest.mark.mount]

LOG = 'echo "$POWERNODE_INIT_ACTION $POWERNODE_INIT_EVENT" >> events.log'


def test_actions_run_on_attach_upgrade_detach_and_on_demand(node: Node) -> None:
    actions = {
        "seed": {"script": LOG, "on": ["attach"]},
        "reload": {"script": LOG, "on": ["upgrade"]},
        "bye": {"script": LOG, "on": ["detach"]},
        "check": {"script": "echo checked; exit 3"},
    }
    assert sync(node, publish(node, "1.0.0", [], actions)).changed
    log = state_dir(node.layout, "app") / "events.log"
    assert log.read_text() == "seed attach\n"
    assert sync(node, publish(node, "2.0.0", [], actions)).changed
    assert log.read_text() == "seed attach\nreload upgrade\n"

    where = ["--state-dir", str(node.layout.state), "--root", str(node.layout.root)]
    result = CliRunner().invoke(app, ["init", "app", "check", *where])
    assert result.exit_code == 3 and result.stdout == "checked\n"
    result = CliRunner().invoke(app, ["init", "app", "nope", *where])
    assert result.exit_code == 1
    assert "module 'app' has no init action 'nope' (it has: bye, check, reload, seed)" in (
        result.stderr
    )
    result = CliRunner().invoke(app, ["init", "ghost", "x", *where])
    assert result.exit_code == 1 and "module 'ghost': no config on record" in result.stderr

    base = {"name": "base", "version": node.base.version, "composefs_digest": node.base.digest,
            "effective_priority": 10}  # fmt: skip
    assert node.service.sync(lambda: {"modules": [base], "composition": None}).changed
    assert log.read_text() == "seed attach\nreload upgrade\nbye detach\n"
    assert not (node.layout.root / "opt/app/version").exists()


def test_a_failing_action_becomes_a_fleet_event(node: Node) -> None:
    actions = {
        "ok": {"script": "true", "on": ["attach"]},
        "boom": {"script": "echo broken config >&2; exit 4", "on": ["attach"]},
    }
    report = sync(node, publish(node, "1.0.0", [], actions))
    assert report.changed and not report.refusals  # the union stays as reconciled
    (failure,) = report.init_failures
    assert failure["module"] == "app" and failure["action"] == "boom"
    assert failure["event"] == "attach" and failure["exit_code"] == 4
    assert failure["stderr"] == "broken config\n" and failure["timed_out"] is False
    events = [(k, s, p) for k, s, p in node.events if k == "module.init_failed"]
    assert events == [("module.init_failed", "warning", dict(failure))]
    assert (node.layout.root / "opt/app/version").exists()


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ({"a": {}}, "give either script or unit"),
        ({"a": {"script": "x", "unit": "y.service"}}, "give either script or unit"),
        ({"a": {"unit": "x; rm -rf /", "action": "start"}}, "init_actions.a.unit"),
        ({"a": {"unit": "x.service", "action": "kill"}}, "init_actions.a.action"),
        ({"a": {"script": "x", "on": ["boot"]}}, "init_actions.a.on"),
    ],
)
def test_bad_actions_name_the_field(actions: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_actions({"init_actions": actions})


def test_a_unit_action_is_systemctl() -> None:
    (a,) = parse_actions(
        {"init_actions": {"r": {"unit": "nginx.service", "action": "reload"}}}
    ).values()
    assert a.script == "exec systemctl reload nginx.service\n"
