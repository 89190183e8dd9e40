"""Reconcile: the pure plan, the desired-set parser, and sync cycles with a fake puller."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from powernode.agent.modules import (
    DesiredModule,
    NodeLayout,
    plan,
    running_module_digests,
    status,
    sync,
)
from powernode.agent.modules.state import AttachState, ModuleSpec
from powernode.errors import DataError, DigestMismatchError, TransportError, VerificationError
from powernode.node import records
from tests.agent.test_modules_support import big, build_module, layout

__all__ = ["layout"]

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def desired(name: str, digest: str, priority: int = 10, version: str = "1") -> DesiredModule:
    return DesiredModule(name, version, digest, priority, f"reg.local/acme/{name}:{version}")


def state_of(*specs: ModuleSpec, mounted: tuple[str, ...] | None = None) -> AttachState:
    hexes = tuple(s.digest[7:] for s in specs) if mounted is None else mounted
    return AttachState({s.name: s for s in specs}, 1, hexes)


@pytest.mark.parametrize(
    ("current", "wanted", "kinds"),
    [
        ((), [desired("a", D1)], [("attach", "a")]),
        ((ModuleSpec("a", D1, 10),), [], [("detach", "a")]),
        ((ModuleSpec("a", D1, 10),), [desired("a", D2)], [("upgrade", "a")]),
        ((ModuleSpec("a", D1, 10),), [desired("a", D1, 20)], [("reprioritize", "a")]),
        ((ModuleSpec("a", D1, 10),), [desired("a", D1)], [("keep", "a")]),
        (
            (ModuleSpec("b", D1, 10), ModuleSpec("a", D2, 5)),
            [desired("c", D3), desired("a", D2, 5)],
            [("keep", "a"), ("detach", "b"), ("attach", "c")],
        ),
    ],
    ids=["new", "gone", "new-digest", "new-priority", "same", "mixed-sorted"],
)
def test_plan(
    current: tuple[ModuleSpec, ...], wanted: list[DesiredModule], kinds: list[tuple[str, str]]
) -> None:
    assert [(a.kind, a.module) for a in plan(state_of(*current), wanted)] == kinds


def test_plan_remounts_an_attached_module_that_is_not_mounted() -> None:
    s = state_of(ModuleSpec("a", D1, 10), mounted=())
    (a,) = plan(s, [desired("a", D1)])
    assert (a.kind, a.previous) == ("remount", D1)


def test_plan_refuses_a_desired_set_naming_a_module_twice() -> None:
    with pytest.raises(DataError, match="more than once: a"):
        plan(AttachState(), [desired("a", D1), desired("a", D2)])


def test_desired_module_from_the_record() -> None:
    item = records.DesiredModule.from_json(
        {
            "name": "chrony",
            "version": "1.0.2",
            "composefs_digest": D1,
            "effective_priority": 300,
            "reference": "reg/acme/chrony:1.0.2",
            "trust_policy": {"cosign_public_key": "x"},
        }
    )
    assert DesiredModule.from_record(item) == DesiredModule(
        "chrony", "1.0.2", D1, 300, "reg/acme/chrony:1.0.2", {"cosign_public_key": "x"}
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"composefs_digest": D1, "effective_priority": 1}, "name: field required"),
        ({"name": "a", "effective_priority": 1}, "composefs_digest: field required"),
        ({"name": "a", "composefs_digest": D1, "effective_priority": "9"}, "expected an integer"),
        ({"name": "a", "composefs_digest": D1, "effective_priority": True}, "expected an integer"),
        ({"name": "a", "composefs_digest": "sha256:zz", "effective_priority": 1}, "invalid digest"),
        ({"name": "a", "digest": D1, "effective_priority": 1}, "digest: unknown field"),
        ({"name": "a", "composefs_digest": D1, "priority": 1}, "priority: unknown field"),
        (
            {"name": "a", "composefs_digest": D1, "effective_priority": 1, "artifact_ref": "r"},
            "artifact_ref: unknown field",
        ),
    ],
    ids=[
        "no-name",
        "no-digest",
        "str-priority",
        "bool-priority",
        "bad-digest",
        "alias-digest",
        "alias-priority",
        "alias-reference",
    ],
)
def test_desired_module_record_rejects(item: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        records.DesiredModule.from_json(item)


@dataclass
class FakePuller:
    """Pulls by building the module into the store; can be told to fail per module."""

    contents: dict[str, dict[str, bytes]]
    fail: dict[str, Exception] = field(default_factory=dict)
    pulled: list[str] = field(default_factory=list)

    def pull(self, module: DesiredModule, layout: NodeLayout) -> None:
        self.pulled.append(module.name)
        if module.name in self.fail:
            raise self.fail[module.name]
        build_module(layout, module.name, self.contents[module.name], version=module.version)


@pytest.mark.mount
def test_sync_cycles_attach_upgrade_and_detach(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/os": big("base")}, priority=10)
    app1 = build_module(layout, "app", {"opt/app": big("app1")}, priority=20)
    app2 = build_module(layout, "app", {"opt/app": big("app2")}, priority=20, version="2")
    want = [desired("base", base.digest, 10), desired("app", app1.digest, 20)]
    puller = FakePuller({"base": {"etc/os": big("base")}, "app": {"opt/app": big("app1")}})
    r = sync(layout, want, puller=puller)
    assert r.ok and r.changed and r.generation == 1
    assert sorted(puller.pulled) == ["app", "base"]
    assert (layout.root / "opt/app").read_bytes() == big("app1")
    assert running_module_digests(layout) == {"base": base.digest, "app": app1.digest}
    # the same desired set again: nothing pulled, nothing remounted
    puller.pulled.clear()
    again = sync(layout, want, puller=puller)
    assert not again.changed and again.generation == 1 and puller.pulled == []
    # an upgrade, then a detach
    puller.contents["app"] = {"opt/app": big("app2")}
    up = sync(layout, [want[0], desired("app", app2.digest, 20, "2")], puller=puller)
    assert [a.kind for a in up.actions] == ["upgrade", "keep"]
    assert (layout.root / "opt/app").read_bytes() == big("app2")
    down = sync(layout, [want[0]], puller=puller)
    assert down.changed and not (layout.root / "opt").exists()
    assert [s.name for s in status(layout)] == ["base"]


@pytest.mark.mount
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (VerificationError("signature by the wrong identity"), "signature"),
        (TransportError("registry unreachable"), "pull-failed"),
        (DigestMismatchError("artifact", D1, D2), "artifact-digest"),
    ],
    ids=["signature", "transport", "other-blob"],
)
def test_sync_pull_failure_changes_nothing_and_reports(
    layout: NodeLayout, error: Exception, reason: str
) -> None:
    base = build_module(layout, "base", {"etc/os": big("base")}, priority=10)
    puller = FakePuller({"base": {"etc/os": big("base")}})
    sync(layout, [desired("base", base.digest, 10)], puller=puller)
    before = layout.state_file.path.read_text()
    puller.fail["app"] = error
    r = sync(layout, [desired("base", base.digest, 10), desired("app", D2, 20)], puller=puller)
    assert not r.ok and not r.changed
    assert [(x.module, x.reason) for x in r.refusals] == [("app", reason)]
    assert (layout.root / "etc/os").read_bytes() == big("base")
    after = json.loads(layout.state_file.path.read_text())
    assert after["modules"] == json.loads(before)["modules"]
    (st,) = [s for s in status(layout, [desired("app", D2, 20)]) if s.name == "app"]
    assert (st.attached, st.mounted, st.pulled, st.desired) == (False, False, False, "1")
    assert reason in st.refusal


@pytest.mark.mount
def test_status_reports_each_stage(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/os": big("base")}, priority=10)
    sync(layout, [desired("base", base.digest, 10)])
    (st,) = status(layout, [desired("base", base.digest, 10)])
    assert st.to_dict() == {
        "name": "base",
        "desired": "1",
        "digest": base.digest,
        "attached": True,
        "pulled": True,
        "verified": True,
        "mounted": True,
        "priority": 10,
        "version": "1",
        "refusal": "",
    }


@dataclass(frozen=True)
class FakeArtifact:
    reference: object
    composefs_digest: str


def test_publish_puller_verifies_then_pulls_the_pinned_manifest(tmp_path: Path) -> None:
    from powernode.agent.modules import PublishPuller
    from powernode.oci.refs import parse_reference

    calls: list[tuple[str, object]] = []
    pinned = parse_reference("reg.local/acme/app@sha256:" + "e" * 64)

    def verify(registry: object, ref: object, policy: object) -> FakeArtifact:
        calls.append(("verify", ref))
        assert policy == "policy"
        return FakeArtifact(pinned, D1)

    def pull(registry: object, ref: object, store: object) -> FakeArtifact:
        calls.append(("pull", ref))
        return FakeArtifact(ref, D1)

    lay = NodeLayout(root=tmp_path / "r", state=tmp_path / "s")
    puller = PublishPuller("registry", verify=verify, pull_fn=pull, store_cls=lambda p: p)
    module = DesiredModule("app", "1", D1, 5, "reg.local/acme/app:1", "policy")
    puller.pull(module, lay)
    assert [c[0] for c in calls] == ["verify", "pull"]
    assert calls[1][1] == pinned  # the pull names what was verified, by digest


@pytest.mark.parametrize("step", ["verify", "pull"])
def test_publish_puller_refuses_another_composefs_digest(tmp_path: Path, step: str) -> None:
    from powernode.agent.modules import PublishPuller

    def verify(registry: object, ref: object, policy: object) -> FakeArtifact:
        return FakeArtifact(ref, D2 if step == "verify" else D1)

    def pull(registry: object, ref: object, store: object) -> FakeArtifact:
        return FakeArtifact(ref, D2)

    lay = NodeLayout(root=tmp_path / "r", state=tmp_path / "s")
    puller = PublishPuller("registry", verify=verify, pull_fn=pull, store_cls=lambda p: p)
    with pytest.raises(DigestMismatchError, match=f"expected {D1}, got {D2}"):
        puller.pull(DesiredModule("app", "1", D1, 5, "reg.local/acme/app:1", "p"), lay)


def test_the_publishing_package_loads_on_the_first_pull_not_with_the_agent() -> None:
    # The agent's resident memory: reconcile imports powernode.publish only inside pull().
    code = (
        "import sys; import powernode.agent.modules.service; "
        "print(sorted(m for m in sys.modules if m.startswith('powernode.publish')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
