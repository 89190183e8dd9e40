"""Instance-variety placeholders rendered at attach time, with real pulls (an OCI layout,
signed) and real mounts: the union shows each template rendered from the facts
``GET /node_api/modules`` delivered, in a layer above the module (the verified image and
its objects untouched); new facts restack; a restart renders again; a placeholder naming
no fact refuses the module with the field named, as a ``module.refused`` event, and the
union that served keeps serving."""

from __future__ import annotations

import json
import stat
from typing import Any

import pytest

from powernode.agent.modules.attach import restore
from powernode.agent.modules.reconcile import PublishPuller
from powernode.agent.modules.render import FACTS_FILE, templates_of
from powernode.errors import DataError
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import public_key_pem
from tests.agent.test_migration import KEY
from tests.agent.test_modules_registry import Node, node
from tests.agent.test_modules_support import big
from tests.publish.artifacts import make_artifact

__all__ = ["node"]

pytestmark = [pytest.mark.mount]

MOTD = "welcome to ${instance.hostname} (${metadata.role}), node ${instance.node_hostname}\n"
SMALL = "id=${instance.id} $${literal}\n"  # inline in the image (<= 64 bytes)


def publish(
    n: Node,
    version: str,
    *,
    motd: str = MOTD,
    templates: list[str] | None = None,
    variety: str = "instance",
) -> dict[str, Any]:
    files = {
        "etc/motd": motd.encode() + big("padding"),  # an object in the store
        "etc/site/id.conf": SMALL.encode(),
        "etc/site/plain.txt": big("${instance.hostname} stays as is"),
    }
    art = make_artifact(n.tmp / f"site-{version}", files, name="site", version=version)
    cfg_path = art / "module.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["manifest"]["templates"] = (
        ["/etc/motd", "/etc/site/id.conf"] if templates is None else templates
    )
    cfg_path.write_text(json.dumps(cfg, sort_keys=True, separators=(",", ":")))
    reg = LayoutRegistry(n.tmp / "layout")
    ref = parse_reference(f"acme/site:{version}")
    push_artifact(reg, ref, art)
    sign_artifact(reg, ref, KEY)
    return {
        "name": "site", "version": version, "composefs_digest": cfg["composefs_digest"],
        "effective_priority": 30, "reference": f"acme/site:{version}", "variety": variety,
        "trust_policy": {"cosign_public_key": public_key_pem(KEY).decode()},
        "metadata": {"role": "web"},
    }  # fmt: skip


def sync(n: Node, site: dict[str, Any], hostname: str = "web-1") -> Any:
    base = {"name": "base", "version": n.base.version, "composefs_digest": n.base.digest,
            "effective_priority": 10}  # fmt: skip
    instance = {"id": "i-7", "hostname": hostname, "node_id": "n-3", "node_hostname": "rack3"}
    n.service.puller = PublishPuller(default_registry=f"oci:{n.tmp / 'layout'}")
    answer = {"modules": [base, site], "composition": None, "instance": instance}
    return n.service.sync(lambda: answer)


def test_templates_render_from_the_facts_in_a_layer_of_their_own(node: Node) -> None:
    site = publish(node, "1.0.0")
    report = sync(node, site)
    assert report.changed and not report.refusals
    root = node.layout.root
    motd = (root / "etc/motd").read_bytes()
    assert motd.startswith(b"welcome to web-1 (web), node rack3\n")
    assert motd.endswith(big("padding"))
    assert (root / "etc/site/id.conf").read_text() == "id=i-7 ${literal}\n"
    # not declared a template: shipped as is
    assert (root / "etc/site/plain.txt").read_bytes() == big("${instance.hostname} stays as is")
    assert stat.S_IMODE((root / "etc/motd").stat().st_mode) == 0o644
    # the verified image is untouched: the module verifies deeply as it was published
    assert not node.service.sync(lambda: _same(node, site)).refusals
    state = node.layout.state_file.load()
    assert state.modules["site"].digest == site["composefs_digest"]

    # new facts: restacked, rendered again
    report = sync(node, site, hostname="web-2")
    assert report.changed
    assert (root / "etc/motd").read_bytes().startswith(b"welcome to web-2 (web)")
    facts = json.loads((node.layout.agent_dir / FACTS_FILE).read_text())
    assert facts["site"]["instance.hostname"] == "web-2"

    # the same facts again: nothing to do
    assert not sync(node, site, hostname="web-2").changed

    # a restart (restore) renders from the facts kept
    result = restore(node.layout)
    assert not result.refused
    assert (root / "etc/motd").read_bytes().startswith(b"welcome to web-2 (web)")


def _same(n: Node, site: dict[str, Any]) -> dict[str, Any]:
    base = {"name": "base", "version": n.base.version, "composefs_digest": n.base.digest,
            "effective_priority": 10}  # fmt: skip
    instance = {"id": "i-7", "hostname": "web-1", "node_id": "n-3", "node_hostname": "rack3"}
    return {"modules": [base, site], "composition": None, "instance": instance}


def test_a_placeholder_naming_no_fact_is_refused_with_the_field_named(node: Node) -> None:
    good = publish(node, "1.0.0")
    assert sync(node, good).changed
    root = node.layout.root
    before = (root / "etc/motd").read_bytes()
    generation = node.layout.state_file.load().generation

    bad = publish(node, "2.0.0", motd="host ${instance.hostnme}\n")
    report = sync(node, bad)
    assert not report.changed
    (refusal,) = report.refusals
    assert refusal.module == "site" and refusal.reason == "placeholder"
    assert refusal.path == "/etc/motd"
    assert "template /etc/motd: placeholder ${instance.hostnme} names no fact" in refusal.detail
    assert "instance.hostname" in refusal.detail  # the facts there are
    # the platform sees it
    kinds = [(k, p.get("reason")) for k, _, p in node.events]
    assert ("module.refused", "placeholder") in kinds
    # the old version keeps serving, rendered as before
    state = node.layout.state_file.load()
    assert state.generation == generation
    assert state.modules["site"].digest == good["composefs_digest"]
    assert (root / "etc/motd").read_bytes() == before


def test_a_template_the_image_lacks_is_refused(node: Node) -> None:
    report = sync(node, publish(node, "1.0.0", templates=["/etc/nope.conf"]))
    (refusal,) = report.refusals
    assert refusal.reason == "placeholder" and refusal.path == "/etc/nope.conf"
    assert "not in the module's image" in refusal.detail
    assert not (node.layout.root / "etc/site").exists()


def test_a_module_not_of_the_instance_variety_is_not_rendered(node: Node) -> None:
    assert sync(node, publish(node, "1.0.0", variety="subscription")).changed
    assert (node.layout.root / "etc/motd").read_bytes().startswith(MOTD.encode())


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        ("/etc/motd", "a list of at most 256 absolute paths"),
        (["etc/motd"], "templates[0]"),
        (["/etc/../motd"], "templates[0]"),
        ([3], "templates[0]: an absolute path"),
    ],
)
def test_bad_template_lists_name_the_field(templates: object, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        templates_of({"templates": templates})
