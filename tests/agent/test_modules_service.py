"""The module layer in the service loop, against the in-memory fake platform, with real mounts:
a sync every ``modules_sync_seconds`` and on a ``modules.sync`` task, running digests in the
heartbeat, refusals as ``module.refused`` warning events (once), restore at start."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.certstore import CertStore
from powernode.agent.lifecycle import ManualClock, StopSignal
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.service import ModuleService
from powernode.agent.modules.state import ModuleSpec
from powernode.agent.runtime import HostFacts, Runtime
from powernode.agent.spool import Spool
from powernode.agent.tasks import InlineExecutor, default_registry
from tests.agent.fakeplatform import FakePlatform, client_for, enrolled_agent
from tests.agent.test_modules_support import big, build_module, cleaned, object_of
from tests.agent.test_modules_tamper import flip_byte

pytestmark = pytest.mark.mount

NOW = datetime(2025, 1, 1, tzinfo=UTC)
INSTANCE = "11111111-2222-4333-8444-555555555555"


class Node:
    """An enrolled agent with the module service, its layout and its fake platform."""

    def __init__(self, tmp_path: Path) -> None:
        self.platform = FakePlatform(ManualClock(NOW))
        self.config = dataclasses.replace(
            enrolled_agent(tmp_path, self.platform),
            modules_sync_seconds=60.0,
            heartbeat_seconds=30.0,
        )
        self.layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "state", boot_id="b1")
        self.spool = Spool(self.config.spool_file)
        self.tasks = default_registry()
        self.runtime = self.make_runtime()

    def make_runtime(self) -> Runtime:
        stop = StopSignal()
        clock = self.platform.clock
        service = ModuleService(
            self.layout,
            None,  # modules are built into the store; nothing to pull
            lambda k, s, p: self.spool.append(k, s, p, clock.now()),
        )
        runtime = Runtime(
            self.config,
            store=CertStore(self.config.pki_dir),
            spool=self.spool,
            client_factory=lambda c: client_for(self.platform, c.info.instance_id, stop=stop.event),
            executor=InlineExecutor(self.tasks),
            clock=clock,
            stop=stop,
            facts=HostFacts(self.layout.root, self.config.modules_dir, self.layout),
            rng=random.Random(3),  # noqa: S311 - reproducible jitter
            modules=service,
        )
        return runtime

    def want(self, *specs: ModuleSpec) -> None:
        self.platform.desired_modules[INSTANCE] = {
            "instance_id": INSTANCE,
            "modules": [
                {
                    "name": s.name,
                    "version": s.version,
                    "composefs_digest": s.digest,
                    "effective_priority": s.priority,
                }
                for s in specs
            ],
            "composition": None,
        }

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.platform.events.values() if e["kind"] == kind]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    with cleaned(tmp_path, n.layout):
        yield n
    n.spool.close()


def test_beat_syncs_and_the_next_heartbeat_reports_running_digests(node: Node) -> None:
    base = build_module(node.layout, "base", {"etc/motd": big("base")}, priority=10)
    node.want(base)
    assert node.runtime.beat()
    assert (node.layout.root / "etc/motd").read_bytes() == big("base")
    (synced,) = node.events("module.synced")
    assert synced["severity"] == "info" and synced["payload"]["generation"] == 1
    assert node.runtime.beat()
    last = node.platform.heartbeats[-1][1]
    assert last["running_module_digests"] == {"base": base.digest}
    # within the interval the platform is not asked again
    asked = node.platform.requests.count("GET /node_api/modules")
    node.platform.clock.advance(30)
    node.runtime.beat()
    assert node.platform.requests.count("GET /node_api/modules") == asked
    node.platform.clock.advance(31)
    node.runtime.beat()
    assert node.platform.requests.count("GET /node_api/modules") == asked + 1


def test_refusal_becomes_one_warning_event_and_the_old_union_serves(node: Node) -> None:
    base = build_module(node.layout, "base", {"etc/motd": big("base")}, priority=10)
    node.want(base)
    node.runtime.beat()
    app = build_module(node.layout, "app", {"opt/app": big("app")}, priority=20)
    flip_byte(object_of(node.layout, app, "opt/app"))
    node.want(base, app)
    for _ in range(3):  # three syncs, the same refusal: one event
        node.platform.clock.advance(61)
        assert node.runtime.beat(), "a refused module does not fail the heartbeat"
    (refused,) = node.events("module.refused")
    assert refused["severity"] == "warning"
    assert refused["payload"]["module"] == "app"
    assert refused["payload"]["reason"] == "object-digest"
    assert "altered on disk" in refused["payload"]["advice"]
    assert (node.layout.root / "etc/motd").read_bytes() == big("base")
    assert not (node.layout.root / "opt").exists()
    assert node.platform.heartbeats[-1][1]["running_module_digests"] == {"base": base.digest}


def test_modules_sync_task_acks_with_the_report_or_fails_with_the_refusal(node: Node) -> None:
    node.tasks.register("modules.sync", node.runtime.modules_task)
    node.config = dataclasses.replace(node.config, modules_sync_seconds=86400.0)
    node.runtime.config = node.config
    node.runtime.beat()  # the timer's first sync: nothing desired yet
    base = build_module(node.layout, "base", {"etc/motd": big("base")}, priority=10)
    node.want(base)
    ok = node.platform.add_task(INSTANCE, "modules.sync")
    node.runtime.beat()
    verb, body = node.platform.tasks[ok].outcomes[-1]
    assert verb == "ack" and body["result"]["changed"] is True
    assert [a["kind"] for a in body["result"]["actions"]] == ["attach"]
    assert (node.layout.root / "etc/motd").exists()
    app = build_module(node.layout, "app", {"opt/app": big("app")}, priority=20)
    flip_byte(object_of(node.layout, app, "opt/app"))
    node.want(base, app)
    bad = node.platform.add_task(INSTANCE, "modules.sync")
    node.runtime.beat()
    verb, body = node.platform.tasks[bad].outcomes[-1]
    assert verb == "fail" and body["retryable"] is False
    assert "app: object-digest" in body["error"]


def test_restore_at_start_remounts_and_reports_what_no_longer_verifies(node: Node) -> None:
    from powernode.agent.modules.attach import attach
    from powernode.agent.modules.union import teardown

    base = build_module(node.layout, "base", {"etc/motd": big("base")}, priority=10)
    app = build_module(node.layout, "app", {"opt/app": big("app")}, priority=20)
    attach(node.layout, base)
    attach(node.layout, app)
    teardown(node.layout)  # as after a reboot
    flip_byte(object_of(node.layout, app, "opt/app"))
    node.runtime.stop.set("test")
    node.runtime.run()  # restores, then stops at once
    assert (node.layout.root / "etc/motd").read_bytes() == big("base")
    assert not (node.layout.root / "opt").exists()
    (refused,) = node.events("module.refused")  # delivered by the drain's flush
    assert (refused["payload"]["module"], refused["payload"]["reason"]) == ("app", "object-digest")


def test_bad_desired_set_is_an_event_and_the_beat_still_succeeds(node: Node) -> None:
    base = build_module(node.layout, "base", {"etc/motd": big("base")}, priority=10)
    node.want(base)
    node.runtime.beat()
    node.platform.desired_modules[INSTANCE] = {"modules": [{"name": "x"}]}
    node.platform.clock.advance(61)
    assert node.runtime.beat(), "a bad desired set must not fail the heartbeat"
    (failed,) = node.events("module.sync_failed")
    assert failed["severity"] == "warning"
    assert "modules.0.composefs_digest: field required" in failed["payload"]["error"]
    assert (node.layout.root / "etc/motd").read_bytes() == big("base")  # nothing detached
