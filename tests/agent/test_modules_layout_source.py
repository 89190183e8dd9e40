"""The agent's module source as an OCI image layout directory (``modules_registry =
"oci:/DIR"``): the same tamper cases as through a registry (test_modules_registry.py), each
refused with nothing new mounted, the old union serving a file, no image kept, and the
reason in ``status`` and one ``module.refused`` event. Plus what only a directory can get
wrong (missing, not a layout), an upgrade whose new version is tampered (the old version
keeps serving), and the setting's grammar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.config import load_config
from powernode.agent.modules.reconcile import PublishPuller
from powernode.agent.modules.trust import PolicyReader
from powernode.errors import ConfigError
from powernode.node.store import image_digest
from powernode.oci.digest import Digest
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import generate_private_key, public_key_pem
from powernode.signing.policy import UnsafeValidityAtNow
from tests.agent.test_modules_registry import APP_FILES, Node, assert_refused, node
from tests.agent.test_modules_support import big, mounts_under
from tests.publish.artifacts import make_artifact, object_bytes
from tests.signing.testca import T0, FakeCA, pem

__all__ = ["node"]

pytestmark = [pytest.mark.mount]


@dataclass
class Pushed:
    ref: str  # repository:tag, naming no host: the layout source serves it
    digest: str  # composefs digest
    manifest: dict[str, Any]
    manifest_digest: Digest
    pub: bytes
    layout: Path


def push(layout: Path, tmp: Path, repo: str, *, files: dict[str, bytes] | None = None,
         signer: Any = None, version: str = "1.0.0", tag: str = "1.0.0",
         ca: FakeCA | None = None) -> Pushed:  # fmt: skip
    tree = {**(files or APP_FILES), "opt/app/id.bin": object_bytes(repo + version, 3000)}
    art = make_artifact(tmp / f"art-{repo.replace('/', '-')}-{version}", tree,
                        name="app", version=version)  # fmt: skip
    ref = parse_reference(f"{repo}:{tag}")
    key = signer or generate_private_key()
    reg = LayoutRegistry(layout)
    push_artifact(reg, ref, art)
    if ca is None:
        sign_artifact(reg, ref, key)
    else:  # keyless: a short-lived certificate naming the CI workflow (cosign/Fulcio)
        sign_artifact(reg, ref, key, certificate_pem=pem(ca.leaf(key)), chain_pem=ca.chain_pem)
    got = reg.get_manifest(ref)
    doc = json.loads((art / "module.json").read_text())
    return Pushed(str(ref), doc["composefs_digest"], json.loads(got.data), got.digest,
                  public_key_pem(key), layout)  # fmt: skip


def sync(node: Node, doc: dict[str, Any], layout: Path) -> Any:
    node.service.puller = PublishPuller(default_registry=f"oci:{layout}")
    return node.service.sync(lambda: doc)


def blob(p: Pushed, digest: Digest) -> Path:
    return p.layout / "blobs" / "sha256" / digest.hex


def layer(p: Pushed, index: int) -> Digest:
    return Digest.parse(p.manifest["layers"][index]["digest"])


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_control_a_good_module_is_attached(node: Node) -> None:
    p = push(node.tmp / "layout", node.tmp, "acme/app")
    report = sync(node, node.desired(p.ref, p.digest, p.pub), p.layout)
    assert report.ok and report.changed, report.refusals
    assert (node.layout.root / "opt/app/f0.bin").read_bytes() == APP_FILES["opt/app/f0.bin"]
    assert (node.layout.root / "etc/motd").read_bytes() == big("base")
    assert [e[0] for e in node.events] == ["module.synced"]


def test_flipped_byte_in_an_object(node: Node) -> None:
    p = push(node.tmp / "layout", node.tmp, "acme/app")
    flip(blob(p, layer(p, 2)), 25_000)  # the pack: inside the second object
    report = sync(node, node.desired(p.ref, p.digest, p.pub), p.layout)
    assert_refused(node, report, "artifact-digest", p.digest, "object ")
    assert f"from pack 0 ({layer(p, 2)}) at offset 20002" in report.refusals[0].detail


def test_flipped_byte_in_the_image(node: Node) -> None:
    p = push(node.tmp / "layout", node.tmp, "acme/app")
    flip(blob(p, layer(p, 0)), 100)
    report = sync(node, node.desired(p.ref, p.digest, p.pub), p.layout)
    assert_refused(node, report, "artifact-digest", p.digest, str(layer(p, 0)))


def test_changed_manifest(node: Node) -> None:
    p = push(node.tmp / "layout", node.tmp, "acme/app")
    path = blob(p, p.manifest_digest)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'"1.0.0"', b'"6.6.6"', 1))  # still JSON, same size
    report = sync(node, node.desired(p.ref, p.digest, p.pub), p.layout)
    assert_refused(node, report, "artifact-digest", p.digest, "")
    assert str(p.manifest_digest) in report.refusals[0].detail


def test_signature_from_the_wrong_identity(node: Node) -> None:
    p = push(node.tmp / "layout", node.tmp, "acme/app")
    trusted = public_key_pem(generate_private_key())
    report = sync(node, node.desired(p.ref, p.digest, trusted), p.layout)
    assert_refused(node, report, "signature", p.digest, "")
    assert "trust policy" in node.events[0][2]["advice"]


def test_version_not_blessed_is_refused(node: Node) -> None:
    # The platform desires 1.0.0's digest; the tag now names a signed 1.0.1 (not blessed).
    key = generate_private_key()
    blessed = push(node.tmp / "layout", node.tmp, "acme/app", signer=key)
    other = {**APP_FILES, "opt/app/new.bin": object_bytes("new", 30_000)}
    newer = push(node.tmp / "layout", node.tmp, "acme/app", files=other, signer=key,
                 version="1.0.1")  # fmt: skip
    report = sync(node, node.desired(blessed.ref, blessed.digest, blessed.pub), blessed.layout)
    assert_refused(node, report, "artifact-digest", newer.digest, "composefs digest")
    r = report.refusals[0]
    assert (r.expected, r.actual) == (blessed.digest, newer.digest)


def test_a_blob_file_holding_another_blobs_bytes(node: Node) -> None:
    # The directory's equivalent of a registry serving another blob for a digest.
    p = push(node.tmp / "layout", node.tmp, "acme/app")
    other = object_bytes("someone else's", blob(p, layer(p, 2)).stat().st_size)
    blob(p, layer(p, 2)).write_bytes(other)
    report = sync(node, node.desired(p.ref, p.digest, p.pub), p.layout)
    assert_refused(node, report, "artifact-digest", p.digest, "digest mismatch")


@pytest.mark.parametrize(
    ("identity", "ok"),
    [(r"https://github\.com/acme/modules/\.github/workflows/build\.yaml@.*", True),
     (r"https://github\.com/evil/.*", False)],
    ids=["right-identity", "wrong-identity"],
)  # fmt: skip
def test_keyless_signature_identity(node: Node, identity: str, ok: bool) -> None:
    ca = FakeCA()
    p = push(node.tmp / "layout", node.tmp, "acme/app", ca=ca)
    doc = node.desired(p.ref, p.digest, p.pub)
    doc["modules"][1]["trust_policy"] = {
        "cosign_identity_regexp": identity,
        "cosign_issuer_regexp": r"https://token\.actions\.githubusercontent\.com",
    }
    reader = PolicyReader(ca.root_pem, lambda: T0, UnsafeValidityAtNow())  # no log here
    node.service.puller = PublishPuller(policies=reader, default_registry=f"oci:{p.layout}")
    report = node.service.sync(lambda: doc)
    if ok:
        assert report.changed and report.ok, report.refusals
        assert (node.layout.root / "opt/app/f1.bin").read_bytes() == APP_FILES["opt/app/f1.bin"]
    else:
        assert_refused(node, report, "signature", p.digest, "does not match")
        assert "github.com/acme/modules" in report.refusals[0].detail  # who did sign


@pytest.mark.parametrize("what", ["missing", "not-a-layout"])
def test_a_source_that_is_not_a_layout_is_a_pull_failure(node: Node, what: str) -> None:
    p = push(node.tmp / "layout", node.tmp, "acme/app")
    source = node.tmp / "elsewhere"
    if what == "not-a-layout":
        source.mkdir()
    report = sync(node, node.desired(p.ref, p.digest, p.pub), source)
    assert_refused(node, report, "pull-failed", p.digest, f"{source}: not an OCI image layout")
    assert not (source / "oci-layout").exists(), "the agent created a layout"


def test_tampered_upgrade_keeps_the_old_version_serving(node: Node) -> None:
    key = generate_private_key()
    old = push(node.tmp / "layout", node.tmp, "acme/app", signer=key)
    assert sync(node, node.desired(old.ref, old.digest, old.pub), old.layout).changed
    mounts = mounts_under(node.layout.state)
    other = {**APP_FILES, "opt/app/f0.bin": object_bytes("f0 v2", 20_000)}
    new = push(node.tmp / "layout", node.tmp, "acme/app", files=other, signer=key,
               version="1.0.1", tag="1.0.1")  # fmt: skip
    for offset in range(100, blob(new, layer(new, 2)).stat().st_size, 1000):
        flip(blob(new, layer(new, 2)), offset)  # every object: the new one is fetched
    doc = node.desired(new.ref, new.digest, new.pub)
    report = sync(node, doc, new.layout)
    assert not report.changed
    assert [(r.module, r.reason) for r in report.refusals] == [("app", "artifact-digest")]
    assert (node.layout.root / "opt/app/f0.bin").read_bytes() == APP_FILES["opt/app/f0.bin"]
    assert mounts_under(node.layout.state) == mounts
    assert not node.layout.store.has_image(image_digest(new.digest))
    assert node.layout.state_file.load().modules["app"].digest == old.digest
    refused = [e for e in node.events if e[0] == "module.refused"]
    assert [e[2]["digest"] for e in refused] == [new.digest]


@pytest.mark.parametrize(
    ("value", "ok"),
    [("oci:/srv/modules", True), ("oci:srv/modules", False), ("oci:/a:b", False),
     ("/srv/modules", False), ("http://127.0.0.1:5000", True)],
)  # fmt: skip
def test_the_setting_takes_oci_absolute_paths(tmp_path: Path, value: str, ok: bool) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(f'modules_registry = "{value}"\n')
    if ok:
        assert load_config(f, {}).modules_registry == value
    else:
        with pytest.raises(ConfigError, match="oci:/absolute/path") as e:
            load_config(f, {})
        assert str(f) in str(e.value)
