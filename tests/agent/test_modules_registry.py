"""Tampering caught on the way in, through a REAL registry (distribution) and the agent's real
puller (signature under the trust policy, pull by the verified digest, mount-time checks).

Each case: a node serves a union (module ``base``); the desired set adds ``app`` from the
registry, and something about ``app`` is wrong. The agent must refuse it, mount nothing new,
keep the old union serving (a file read through it), leave no image of ``app`` in its store,
and report why (``status`` and a ``module.refused`` warning event). The same steps with
nothing wrong attach ``app`` (the control case), so the checks are known to be able to pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.modules.attach import attach
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import PublishPuller
from powernode.agent.modules.service import ModuleService
from powernode.agent.modules.state import ModuleSpec
from powernode.agent.modules.status import status
from powernode.node.store import image_digest
from powernode.oci.digest import Digest
from powernode.oci.distribution import ClientLimits, DistributionRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import generate_private_key, public_key_pem
from tests.agent.test_modules_support import big, build_module, cleaned, mounts_under
from tests.oci.registry_fixture import RunningRegistry, oci_registry
from tests.publish.artifacts import make_artifact, object_bytes
from tests.publish.faulty import Answer, faulty_registry, is_blob_get

__all__ = ["oci_registry"]

pytestmark = [pytest.mark.registry, pytest.mark.mount]

FAST = ClientLimits(attempts=2, backoff=0.0, read_timeout=2.0, connect_timeout=2.0)
APP_FILES = {f"opt/app/f{i}.bin": object_bytes(f"app{i}", 20_000 + i) for i in range(4)}


@dataclass
class Node:
    layout: NodeLayout
    base: ModuleSpec
    events: list[tuple[str, str, dict[str, Any]]]
    service: ModuleService
    mounts: list[str]
    tmp: Path

    def desired(self, app_ref: str, app_digest: str, pub: bytes) -> dict[str, Any]:
        base = {
            "name": "base",
            "version": self.base.version,
            "composefs_digest": self.base.digest,
            "effective_priority": 10,
        }
        app = {
            "name": "app",
            "version": "1.0.0",
            "composefs_digest": app_digest,
            "effective_priority": 20,
            "reference": app_ref,
            "trust_policy": {"cosign_public_key": pub.decode()},
        }
        return {"modules": [base, app], "composition": None}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "state", boot_id="b1")
    with cleaned(tmp_path, layout):
        base = build_module(layout, "base", {"etc/motd": big("base")}, priority=10)
        attach(layout, base)
        events: list[tuple[str, str, dict[str, Any]]] = []
        service = ModuleService(layout, None, lambda k, s, p: events.append((k, s, p)))
        yield Node(layout, base, events, service, mounts_under(layout.state), tmp_path)


@dataclass
class Pushed:
    ref: str  # host/repository:tag as the platform would send it
    digest: str  # composefs digest
    manifest: dict[str, Any]
    manifest_digest: Digest
    pub: bytes


def push(url: str, tmp: Path, repo: str, *, files: dict[str, bytes] | None = None,
         signer: Any = None, version: str = "1.0.0", tag: str = "1.0.0") -> Pushed:  # fmt: skip
    # A file of its own per repository: blobs are shared registry-wide by digest, and a
    # test that tampers with one must not tamper with another test's artifact.
    tree = {**(files or APP_FILES), "opt/app/id.bin": object_bytes(repo, 3000)}
    art = make_artifact(tmp / f"art-{repo.replace('/', '-')}-{version}", tree,
                        name="app", version=version)  # fmt: skip
    host = url.removeprefix("http://")
    ref = parse_reference(f"{host}/{repo}:{tag}")
    key = signer or generate_private_key()
    with DistributionRegistry(url) as reg:
        push_artifact(reg, ref, art)
        sign_artifact(reg, ref, key)
        got = reg.get_manifest(ref)
    doc = json.loads((art / "module.json").read_text())
    return Pushed(str(ref), doc["composefs_digest"], json.loads(got.data), got.digest,
                  public_key_pem(key))  # fmt: skip


def sync(node: Node, doc: dict[str, Any], registry: Any = None) -> Any:
    node.service.puller = PublishPuller(registry)
    return node.service.sync(lambda: doc)


def assert_refused(node: Node, report: Any, reason: str, digest: str, detail: str) -> None:
    """Refused for ``reason``; nothing new mounted; the old union serves; reported."""
    assert not report.changed
    assert [(r.module, r.reason) for r in report.refusals] == [("app", reason)]
    assert detail in report.refusals[0].detail, report.refusals[0].detail
    assert (node.layout.root / "etc/motd").read_bytes() == big("base")
    assert not (node.layout.root / "opt").exists()
    assert mounts_under(node.layout.state) == node.mounts, "a mount was added or removed"
    assert not node.layout.store.has_image(image_digest(digest)), (
        "an image of the refused module was kept"
    )
    state = node.layout.state_file.load()
    assert sorted(state.modules) == ["base"] and state.generation == 1
    (row,) = [s for s in status(node.layout) if s.name == "app"]
    assert reason in row.refusal and not row.mounted
    (event,) = [e for e in node.events if e[0] == "module.refused"]
    assert event[1] == "warning" and event[2]["reason"] == reason and event[2]["module"] == "app"


def flip_in_blob(reg: RunningRegistry, digest: Digest, offset: int) -> None:
    data = reg.blob_data(digest)
    raw = bytearray(data.read_bytes())
    raw[offset] ^= 0x01
    data.write_bytes(bytes(raw))


def layer(p: Pushed, index: int) -> Digest:
    return Digest.parse(p.manifest["layers"][index]["digest"])


def test_control_a_good_module_is_attached(node: Node, oci_registry: RunningRegistry) -> None:
    p = push(oci_registry.url, node.tmp, "tamper/control")
    report = sync(node, node.desired(p.ref, p.digest, p.pub))
    assert report.ok and report.changed, report.refusals
    assert (node.layout.root / "opt/app/f0.bin").read_bytes() == APP_FILES["opt/app/f0.bin"]
    assert (node.layout.root / "etc/motd").read_bytes() == big("base")
    assert [e[0] for e in node.events] == ["module.synced"]


def test_flipped_byte_in_an_object(node: Node, oci_registry: RunningRegistry) -> None:
    p = push(oci_registry.url, node.tmp, "tamper/object")
    flip_in_blob(oci_registry, layer(p, 2), 25_000)  # the pack: inside the second object
    report = sync(node, node.desired(p.ref, p.digest, p.pub))
    assert_refused(node, report, "artifact-digest", p.digest, "object ")


def test_flipped_byte_in_the_image(node: Node, oci_registry: RunningRegistry) -> None:
    p = push(oci_registry.url, node.tmp, "tamper/image")
    flip_in_blob(oci_registry, layer(p, 0), 100)
    report = sync(node, node.desired(p.ref, p.digest, p.pub))
    assert_refused(node, report, "artifact-digest", p.digest, str(layer(p, 0)))


def test_changed_manifest(node: Node, oci_registry: RunningRegistry) -> None:
    p = push(oci_registry.url, node.tmp, "tamper/manifest")
    data = oci_registry.blob_data(p.manifest_digest)
    raw = data.read_bytes()
    assert raw.count(b'"1.0.0"') >= 1
    data.write_bytes(raw.replace(b'"1.0.0"', b'"6.6.6"', 1))  # still valid JSON, same size
    report = sync(node, node.desired(p.ref, p.digest, p.pub))
    assert_refused(node, report, "artifact-digest", p.digest, "manifest")


def test_signature_from_the_wrong_identity(node: Node, oci_registry: RunningRegistry) -> None:
    p = push(oci_registry.url, node.tmp, "tamper/signer")
    trusted = public_key_pem(generate_private_key())  # the policy names another key
    report = sync(node, node.desired(p.ref, p.digest, trusted))
    assert_refused(node, report, "signature", p.digest, "")
    assert "trust policy" in node.events[0][2]["advice"]


def test_version_not_blessed_is_not_what_the_registry_serves(
    node: Node, oci_registry: RunningRegistry
) -> None:
    # The platform desires 1.0.0's digest; the tag now serves a signed 1.0.1 (not blessed).
    key = generate_private_key()
    blessed = push(oci_registry.url, node.tmp, "tamper/unblessed", signer=key)
    other = {**APP_FILES, "opt/app/new.bin": object_bytes("new", 30_000)}
    newer = push(oci_registry.url, node.tmp, "tamper/unblessed", files=other, signer=key,
                 version="1.0.1")  # fmt: skip
    assert newer.digest != blessed.digest
    report = sync(node, node.desired(blessed.ref, blessed.digest, blessed.pub))
    assert_refused(node, report, "artifact-digest", newer.digest, "composefs digest")
    r = report.refusals[0]
    assert (r.expected, r.actual) == (blessed.digest, newer.digest)


def test_registry_serves_another_blob_for_a_digest(
    node: Node, oci_registry: RunningRegistry
) -> None:
    swap = {"on": False}
    holder: dict[str, Pushed] = {}

    def fault(method: str, path: str, headers: dict[str, str], real: Answer) -> Answer:
        if swap["on"] and is_blob_get(method, path, str(layer(holder["p"], 2))):
            return Answer(real.status, real.headers, real.body[::-1])
        return real

    with faulty_registry(oci_registry.url, fault) as proxy:
        holder["p"] = p = push(proxy.url, node.tmp, "tamper/swapped")
        swap["on"] = True
        with DistributionRegistry(proxy.url, limits=FAST, sleep=lambda _: None) as reg:
            report = sync(node, node.desired(p.ref, p.digest, p.pub), reg)
    assert_refused(node, report, "artifact-digest", p.digest, "digest mismatch")


def test_refusal_is_reported_once_then_a_fixed_registry_attaches(
    node: Node, oci_registry: RunningRegistry
) -> None:
    p = push(oci_registry.url, node.tmp, "tamper/recover")
    pack = oci_registry.blob_data(layer(p, 2))
    good = pack.read_bytes()
    flip_in_blob(oci_registry, layer(p, 2), 25_000)
    doc = node.desired(p.ref, p.digest, p.pub)
    for _ in range(2):
        assert not sync(node, doc).ok
    assert [e[0] for e in node.events] == ["module.refused"]
    pack.write_bytes(good)
    assert sync(node, doc).changed
    assert (node.layout.root / "opt/app/f3.bin").read_bytes() == APP_FILES["opt/app/f3.bin"]


def test_cli_attach_from_the_registry_checks_the_policy(
    node: Node, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from powernode.cli.agent import app

    monkeypatch.delenv("POWERNODE_AGENT_CONFIG", raising=False)
    p = push(oci_registry.url, node.tmp, "cli/attach")
    where = ["--state-dir", str(node.layout.state), "--root", str(node.layout.root)]
    wrong = node.tmp / "other.pub"
    wrong.write_bytes(public_key_pem(generate_private_key()))
    bad = CliRunner().invoke(app, ["modules", "attach", p.ref, "--policy", str(wrong), *where])
    assert bad.exit_code == 1
    assert "refused: nothing new was mounted" in bad.stderr
    assert f"attach: signature ({p.ref})" in bad.stderr  # named after the repository
    assert mounts_under(node.layout.state) == node.mounts
    pub = node.tmp / "cosign.pub"
    pub.write_bytes(p.pub)
    args = ["modules", "attach", p.ref, "--policy", str(pub), "--priority", "30", "--json"]
    ok = CliRunner().invoke(app, [*args, *where])
    assert ok.exit_code == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["attached"] == "app" and doc["objects_fetched"] == 5 and doc["changed"]
    assert [m["name"] for m in doc["modules"]] == ["app", "base"]
    assert (node.layout.root / "opt/app/f1.bin").read_bytes() == APP_FILES["opt/app/f1.bin"]
    (row,) = [s for s in status(node.layout) if s.name == "app"]
    assert row.mounted and row.refusal == "" and row.digest == p.digest


def test_tampered_upgrade_keeps_the_old_version_serving(
    node: Node, oci_registry: RunningRegistry
) -> None:
    # app 1.0.0 serves; the platform moves to 1.0.1, whose pack was tampered with in the
    # registry: refused, and 1.0.0 (not only base) still serves, attached and mounted.
    key = generate_private_key()
    old = push(oci_registry.url, node.tmp, "tamper/upgrade", signer=key)
    assert sync(node, node.desired(old.ref, old.digest, old.pub)).changed
    mounts = mounts_under(node.layout.state)
    files = {**APP_FILES, "opt/app/f0.bin": object_bytes("f0 v2", 20_000)}
    new = push(oci_registry.url, node.tmp, "tamper/upgrade", files=files, signer=key,
               version="1.0.1", tag="1.0.1")  # fmt: skip
    pack = oci_registry.blob_data(layer(new, 2))
    raw = bytearray(pack.read_bytes())
    for i in range(100, len(raw), 1000):  # inside every object: the new one is fetched
        raw[i] ^= 0x01
    pack.write_bytes(bytes(raw))
    report = sync(node, node.desired(new.ref, new.digest, new.pub))
    assert not report.changed
    assert [(r.module, r.reason) for r in report.refusals] == [("app", "artifact-digest")]
    assert (node.layout.root / "opt/app/f0.bin").read_bytes() == APP_FILES["opt/app/f0.bin"]
    assert mounts_under(node.layout.state) == mounts
    assert not node.layout.store.has_image(image_digest(new.digest))
    state = node.layout.state_file.load()
    assert state.modules["app"].digest == old.digest and state.generation == 2
    (row,) = [s for s in status(node.layout) if s.name == "app"]
    assert row.mounted and "artifact-digest" in row.refusal
    refused = [e for e in node.events if e[0] == "module.refused"]
    assert [(e[2]["reason"], e[2]["digest"]) for e in refused] == [("artifact-digest", new.digest)]
