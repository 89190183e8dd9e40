"""``powernode-agent commit --push`` end to end against the real platform (mTLS, SQLite):
the node builds its instance-variety module's changes, pushes them, signs them with its
key and announces them; the platform records the version as ``built``, attributed to the
instance, with a ``module.version_committed`` event — and never promotes it.

Bad input, each with its message and nothing recorded: a module not of the instance
variety (refused by the agent before anything is built or sent), a module the node's
template no longer runs (refused by the platform after the push; the CLI says the push
happened and the platform did not record it), a revoked certificate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from powernode.agent.modules.attach import attach
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.service import ModuleService
from powernode.cli.agent import app
from powernode.platform.db import FleetEvent, NodeModuleVersion
from tests.agent.nodecmds import Enrolled, Operator, enrolled
from tests.agent.test_commit import publish
from tests.agent.test_modules_registry import Node
from tests.agent.test_modules_support import big, build_module, cleaned, mounts_under
from tests.platform.nodeapi.realplatform import RealPlatform, real_platform

pytestmark = [pytest.mark.mount, pytest.mark.slow]


class Setup:
    def __init__(self, platform: RealPlatform, op: Operator, node: Node, who: Enrolled) -> None:
        self.platform, self.op, self.node, self.who = platform, op, node, who

    def commit(self, version: str, *extra: str) -> Any:
        out = self.node.tmp / f"out-{version}"
        target = f"oci:{self.node.tmp / 'made'}:acme/site:{version}"
        args = ["commit", "site", "--version", version, "--out", str(out), "--push", target,
                "--config", str(self.who.config), *extra]  # fmt: skip
        return CliRunner().invoke(app, args)

    def versions(self) -> list[NodeModuleVersion]:
        with Session(self.platform.engine) as s:
            q = select(NodeModuleVersion).where(NodeModuleVersion.committed_by_instance_id != None)  # noqa: E711
            return list(s.scalars(q))

    def events(self) -> list[FleetEvent]:
        with Session(self.platform.engine) as s:
            q = select(FleetEvent).where(FleetEvent.kind == "module.version_committed")
            return list(s.scalars(q))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with real_platform(tmp_path) as platform:
        op = Operator(platform)
        try:
            for name, variety in (("site", "instance"), ("base", "subscription")):
                body = {"name": name, "category_slug": "userland", "variety": variety}
                r = op.call("POST", "/node_modules", json=body)
                assert r.status_code == 201, r.text
                r = op.call("POST", "/node_templates/base/assignments", json={"module_name": name})
                assert r.status_code == 201, r.text
            root, upper = tmp_path / "root", tmp_path / "upper"
            who = enrolled(tmp_path, platform, "maker", modules_root=root, modules_upper=upper)
            layout = NodeLayout(root=root, state=who.state, upper=upper)
            with cleaned(tmp_path, layout):
                base = build_module(layout, "base", {"etc/base.conf": big("base")}, priority=10)
                attach(layout, base)
                events: list[tuple[str, str, dict[str, Any]]] = []
                service = ModuleService(layout, None, lambda k, s, p: events.append((k, s, p)))
                node = Node(layout, base, events, service, mounts_under(layout.state), tmp_path)
                publish(node, "instance")
                yield Setup(platform, op, node, who)
        finally:
            op.close()


def test_commit_is_recorded_by_the_platform_as_built(setup: Setup) -> None:
    (setup.node.layout.root / "etc/site/new.conf").write_text("made on the node\n")
    result = setup.commit("1.0.1-node.1")
    assert result.exit_code == 0, result.output
    assert "signed by the node" in result.stdout
    assert (
        f"platform recorded site 1.0.1-node.1 as built, made by instance {setup.who.instance_id}"
        in result.stdout
    )
    (version,) = setup.versions()
    assert version.version_string == "1.0.1-node.1"
    assert version.committed_by_instance_id == setup.who.instance_id
    assert version.promotion_state == "built" and version.promoted_at is None
    assert "/etc/site/new.conf" in version.file_list
    assert version.artifact_ref is not None and "@sha256:" in version.artifact_ref
    (event,) = setup.events()
    assert event.instance_id == setup.who.instance_id
    assert event.payload["version_id"] == version.id
    # The operator's version record says who made it.
    r = setup.op.call("GET", f"/node_module_versions/{version.id}")
    assert r.json()["version"]["committed_by_instance_id"] == setup.who.instance_id
    # --json: the record the platform answered.
    result = setup.commit("1.0.1-node.2", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["recorded"]["created"] is True
    assert doc["recorded"]["committed_by_instance_id"] == setup.who.instance_id
    assert len(setup.versions()) == 2 and len(setup.events()) == 2


def test_a_module_not_of_the_instance_variety_is_refused_by_the_agent(setup: Setup) -> None:
    out = setup.node.tmp / "out-base"
    args = ["commit", "base", "--version", "1.0.1", "--out", str(out),
            "--push", f"oci:{setup.node.tmp / 'made'}:acme/base:1.0.1",
            "--config", str(setup.who.config)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "module 'base' is not of the instance variety" in result.stderr
    assert not out.exists() and not (setup.node.tmp / "made").exists()
    assert setup.versions() == [] and setup.events() == []


def test_a_module_the_template_does_not_run_is_refused_by_the_platform(setup: Setup) -> None:
    r = setup.op.call("DELETE", "/node_templates/base/assignments/site")
    assert r.status_code in (200, 204), r.text
    (setup.node.layout.root / "etc/site/new.conf").write_text("made on the node\n")
    result = setup.commit("1.0.1-node.1")
    assert result.exit_code == 1
    assert "but the platform did not record it" in result.stderr
    assert "module 'site' is not assigned to template 'base'" in result.stderr
    assert setup.versions() == [] and setup.events() == []


def test_a_revoked_certificate_is_refused(setup: Setup) -> None:
    r = setup.op.call("POST", f"/node_instances/{setup.who.instance_id}/certificates/revoke")
    assert r.status_code == 200, r.text
    (setup.node.layout.root / "etc/site/new.conf").write_text("made on the node\n")
    result = setup.commit("1.0.1-node.1")
    assert result.exit_code == 1
    assert "revoked" in result.stderr
    assert setup.versions() == [] and setup.events() == []
