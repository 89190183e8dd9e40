"""``powernode-agent puppet apply``: a manifest a module ships (signed pull, real mounts),
applied with Debian's puppet; its report and log turned into fleet events (the CLI puts
them in the event buffer the service sends); a failing resource makes the run fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from powernode.agent.puppet import apply, read_log
from powernode.agent.spool import Spool
from powernode.cli.agent import app
from powernode.errors import ConfigError
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import public_key_pem
from tests.agent.test_migration import KEY
from tests.agent.test_migration import sync as sync_app
from tests.agent.test_modules_registry import Node, node
from tests.conftest import require_tool
from tests.publish.artifacts import make_artifact

__all__ = ["node"]

pytestmark = [pytest.mark.mount, pytest.mark.tool, pytest.mark.slow]


def publish(n: Node, version: str, manifest: str) -> dict[str, Any]:
    files = {"etc/puppet/manifests/app.pp": manifest.encode()}
    art = make_artifact(n.tmp / f"pp-{version}", files, name="app", version=version)
    cfg = json.loads((art / "module.json").read_text())
    reg = LayoutRegistry(n.tmp / "layout")
    ref = parse_reference(f"acme/app:{version}")
    push_artifact(reg, ref, art)
    sign_artifact(reg, ref, KEY)
    return {
        "name": "app", "version": version, "composefs_digest": cfg["composefs_digest"],
        "effective_priority": 20, "reference": f"acme/app:{version}",
        "trust_policy": {"cosign_public_key": public_key_pem(KEY).decode()},
    }  # fmt: skip


def test_apply_a_modules_manifest_and_report_it_as_events(node: Node, tmp_path: Path) -> None:
    require_tool("puppet")
    target = tmp_path / "made-by-puppet.txt"
    good = f'file {{ "{target}": content => "hello from puppet\\n" }}\n'
    assert sync_app(node, publish(node, "1.0.0", good)).changed
    run = apply(node.layout, "app")
    assert run.ok and run.status == "changed" and run.exit_code == 2
    assert target.read_text() == "hello from puppet\n"
    kind, severity, summary = run.events[0]
    assert (kind, severity) == ("puppet.applied", "info")
    assert summary["manifest"] == "/etc/puppet/manifests/app.pp"
    assert summary["report_status"] == "changed" and summary["failed_resources"] == []
    assert isinstance(summary["resources"], dict) and summary["resources"]["changed"] == 1

    bad = good + 'exec { "boom": command => "/bin/false" }\n'
    assert sync_app(node, publish(node, "2.0.0", bad)).changed
    where = ["--state-dir", str(node.layout.state), "--root", str(node.layout.root)]
    result = CliRunner().invoke(app, ["puppet", "apply", "app", *where])
    assert result.exit_code == 1, result.output
    assert "puppet apply app /etc/puppet/manifests/app.pp: failed (exit 4)" in result.stdout
    spool = Spool(node.layout.state / "spool" / "events.db")
    try:
        events = spool.peek(1000)
    finally:
        spool.close()
    applied = [e for e in events if e.kind == "puppet.applied"]
    assert len(applied) == 1 and applied[0].severity == "error"
    assert applied[0].payload["failed_resources"] == ["Exec[boom]"]
    logs = [e.payload for e in events if e.kind == "puppet.log"]
    assert any(
        p.get("source") == "/Stage[main]/Main/Exec[boom]/returns"
        and p.get("file") == "/etc/puppet/manifests/app.pp"
        and p.get("line") == 2
        for p in logs
    )


def test_a_manifest_the_module_does_not_ship_is_refused(node: Node) -> None:
    with pytest.raises(ConfigError, match=r"module 'base' ships no /etc/puppet/manifests/base\.pp"):
        apply(node.layout, "base")
    with pytest.raises(ConfigError, match="module 'ghost' is not attached"):
        apply(node.layout, "ghost")


def test_an_unterminated_log_is_read(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    log.write_text('[\n{"level":"err","message":"x"}\n,\n')
    assert read_log(log) == [{"level": "err", "message": "x"}]
