"""``powernode-agent commit``: an instance-variety module's persistent changes, written
through a real union onto a persistent upper, captured (file_spec and mask applied, a
deletion carried as one) and built with the module toolchain into a new version; a module
not of the instance variety refused with nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from powernode.agent.commit import commit
from powernode.agent.modules.attach import attach
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import PublishPuller
from powernode.agent.modules.service import ModuleService
from powernode.cli.agent import app
from powernode.errors import ConfigError
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import public_key_pem
from powernode.verity.composefs.reader import Image
from tests.agent.test_migration import KEY
from tests.agent.test_modules_registry import Node
from tests.agent.test_modules_support import big, build_module, cleaned, mounts_under
from tests.publish.artifacts import make_artifact

pytestmark = [pytest.mark.mount]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    layout = NodeLayout(
        root=tmp_path / "root", state=tmp_path / "state", boot_id="b1", upper=tmp_path / "upper"
    )
    with cleaned(tmp_path, layout):
        base = build_module(layout, "base", {"etc/base.conf": big("base")}, priority=10)
        attach(layout, base)
        events: list[tuple[str, str, dict[str, Any]]] = []
        service = ModuleService(layout, None, lambda k, s, p: events.append((k, s, p)))
        yield Node(layout, base, events, service, mounts_under(layout.state), tmp_path)


def publish(n: Node, variety: str) -> dict[str, Any]:
    files = {
        "etc/motd": big("motd"),
        "etc/site/plain.txt": big("as shipped"),
        "etc/site/old.txt": b"to be deleted\n",
    }
    art = make_artifact(n.tmp / "site-art", files, name="site", version="1.0.0")
    cfg_path = art / "module.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["manifest"]["file_spec"] = ["/etc/motd", "/etc/site/**"]
    cfg["manifest"]["mask"] = ["/etc/site/*.key"]
    cfg_path.write_text(json.dumps(cfg, sort_keys=True, separators=(",", ":")))
    reg = LayoutRegistry(n.tmp / "layout")
    push_artifact(reg, parse_reference("acme/site:1.0.0"), art)
    sign_artifact(reg, parse_reference("acme/site:1.0.0"), KEY)
    site = {
        "name": "site", "version": "1.0.0", "composefs_digest": cfg["composefs_digest"],
        "effective_priority": 30, "reference": "acme/site:1.0.0", "variety": variety,
        "trust_policy": {"cosign_public_key": public_key_pem(KEY).decode()},
    }  # fmt: skip
    base = {"name": "base", "version": n.base.version, "composefs_digest": n.base.digest,
            "effective_priority": 10}  # fmt: skip
    instance = {"id": "i-1", "hostname": "h", "node_id": "n", "node_hostname": "nh"}
    n.service.puller = PublishPuller(default_registry=f"oci:{n.tmp / 'layout'}")
    report = n.service.sync(
        lambda: {"modules": [base, site], "composition": None, "instance": instance}
    )
    assert report.changed and not report.refusals
    return site


def read(image: Image, objects: Path, path: str) -> bytes:
    e = image.lookup(path)
    if e.payload is None:
        return image.read_inline(e)
    return (objects / e.payload.decode()).read_bytes()


def test_commit_captures_the_delta_and_builds_a_new_version(node: Node) -> None:
    publish(node, "instance")
    root = node.layout.root
    (root / "etc/site/new.conf").write_text("made on the node\n")
    (root / "etc/site/plain.txt").write_bytes(b"changed on the node\n")
    (root / "etc/site/old.txt").unlink()
    (root / "etc/site/secret.key").write_text("masked\n")
    (root / "etc/other.conf").write_text("outside file_spec\n")

    out = node.tmp / "out"
    done = commit(node.layout, "site", version="1.0.1-node.1", out=out)
    assert done.delta.changed == ("/etc/site/new.conf", "/etc/site/plain.txt")
    assert done.delta.deleted == ("/etc/site/old.txt",)
    config = json.loads((out / "module.json").read_text())
    assert config["name"] == "site" and config["version"] == "1.0.1-node.1"
    assert config["composefs_digest"] == done.composefs_digest
    image = Image.from_bytes((out / "image.cfs").read_bytes())
    objects = out / "objects"
    assert read(image, objects, "/etc/site/new.conf") == b"made on the node\n"
    assert read(image, objects, "/etc/site/plain.txt") == b"changed on the node\n"
    assert read(image, objects, "/etc/motd") == big("motd")  # the module's tree carried over
    for gone in ("/etc/site/old.txt", "/etc/site/secret.key", "/etc/other.conf"):
        with pytest.raises(FileNotFoundError):
            image.lookup(gone)
    # the attached version is as it was
    assert node.layout.state_file.load().modules["site"].version == "1.0.0"


def test_commit_of_a_module_not_of_the_instance_variety_is_refused(node: Node) -> None:
    publish(node, "subscription")
    (node.layout.root / "etc/site/new.conf").write_text("made on the node\n")
    out = node.tmp / "out"
    with pytest.raises(ConfigError, match="module 'site' is not of the instance variety"):
        commit(node.layout, "site", version="1.0.1", out=out)
    assert not out.exists()
    where = ["--state-dir", str(node.layout.state), "--root", str(node.layout.root)]
    result = CliRunner().invoke(
        app, ["commit", "base", "--version", "1.0.1", "--out", str(out), *where]
    )
    assert result.exit_code == 1
    assert "module 'base' is not of the instance variety" in result.stderr
    assert not out.exists()
    result = CliRunner().invoke(
        app, ["commit", "ghost", "--version", "1.0.1", "--out", str(out), *where]
    )
    assert result.exit_code == 1 and "module 'ghost' is not attached" in result.stderr


def test_commit_pushes_a_version_signed_by_the_node(node: Node) -> None:
    from powernode.agent.certstore import CertStore
    from powernode.agent.commit import push_signed
    from powernode.agent.lifecycle import ManualClock
    from powernode.agent.modules.trust import PolicyReader
    from powernode.errors import VerificationError
    from powernode.publish.verify import verify_artifact
    from powernode.signing import generate_private_key
    from tests.agent.fakeplatform import FakePlatform
    from tests.agent.test_certstore import INSTANCE, NOW, _install_first

    publish(node, "instance")
    (node.layout.root / "etc/site/new.conf").write_text("made on the node\n")
    out = node.tmp / "out"
    done = commit(node.layout, "site", version="1.0.1-node.1", out=out)
    pki = CertStore(node.tmp / "pki")
    with pytest.raises(ConfigError, match="not enrolled"):
        push_signed(pki, out, f"oci:{node.tmp / 'made'}:acme/site:1.0.1-node.1")
    _install_first(pki, FakePlatform(ManualClock(NOW)))
    pushed = push_signed(pki, out, f"oci:{node.tmp / 'made'}:acme/site:1.0.1-node.1")
    assert pushed.instance_id == INSTANCE
    reg = LayoutRegistry(node.tmp / "made")
    ref = parse_reference("acme/site:1.0.1-node.1")
    policy = PolicyReader()(pushed.trust_policy, "node-made")
    verified = verify_artifact(reg, ref, policy)
    assert str(verified.composefs_digest) == done.composefs_digest
    assert str(verified.manifest_digest) == pushed.manifest_digest
    other = {"cosign_public_key": public_key_pem(generate_private_key()).decode()}
    with pytest.raises(VerificationError):
        verify_artifact(reg, ref, PolicyReader()(other, "another key"))
