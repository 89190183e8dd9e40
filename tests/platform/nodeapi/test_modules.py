"""GET /node_api/modules: the instance's desired set, in the form the agent parses."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from powernode.agent.modules.desired import parse_desired
from powernode.platform.db import Node, NodeModule, NodeModuleVersion
from tests.platform.nodeapi.conftest import NodePlatform
from tests.platform.test_preview import assign, publish

PUB = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _digest(name: str, version: str) -> str:
    return "sha256:" + hashlib.sha256(f"{name}-{version}".encode()).hexdigest()


def _stack(p: NodePlatform) -> None:
    publish(p, "system-base", category="system-base", files=["/etc/os-release"],
            digest=_digest("system-base", "1.0.0"), state="live")  # fmt: skip
    publish(p, "my-redis", files=["/etc/redis.conf"], requires=["acme/system-base"],
            digest=_digest("my-redis", "1.0.0"), state="live")  # fmt: skip
    publish(p, "my-redis", "1.1.0", files=["/etc/redis.conf"], state="staging",
            digest=_digest("my-redis", "1.1.0"))  # fmt: skip
    assign(p, "base", "my-redis")
    with p.engine.begin() as c:
        c.execute(update(NodeModule).values(cosign_public_key=PUB))
        c.execute(
            update(NodeModuleVersion).values(
                artifact_ref="registry.test/acme/mod:" + NodeModuleVersion.version_string
            )
        )


def test_desired_set_is_what_the_agent_parses(node_platform: NodePlatform) -> None:
    p = node_platform
    _stack(p)
    creds = p.enroll()
    r = p.node(creds, "GET", "/modules")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["instance_id"] == creds.instance_id
    assert doc["template"] == "base"
    assert doc["allowed_states"] == ["live"]
    parsed = parse_desired(doc)  # the agent's own parser (powernode.agent.modules.desired)
    got = {m.name: (m.version, m.digest, m.reference) for m in parsed.modules}
    assert got == {
        "system-base": ("1.0.0", _digest("system-base", "1.0.0"), "registry.test/acme/mod:1.0.0"),
        "my-redis": ("1.0.0", _digest("my-redis", "1.0.0"), "registry.test/acme/mod:1.0.0"),
    }
    assert all(m.policy == {"cosign_public_key": PUB} for m in parsed.modules)
    prios = {m.name: m.priority for m in parsed.modules}
    assert prios["my-redis"] > prios["system-base"]
    assert parsed.composition is not None
    assert {m.name for m in parsed.composition.modules} == {"system-base", "my-redis"}


def test_test_nodes_also_get_staging_versions(node_platform: NodePlatform) -> None:
    p = node_platform
    _stack(p)
    creds = p.enroll()
    with p.engine.begin() as c:
        c.execute(update(Node).values(node_metadata={"test": True}))
    doc = p.node(creds, "GET", "/modules").json()
    assert doc["allowed_states"] == ["blessed", "live", "staging"]
    versions = {m.name: m.version for m in parse_desired(doc).modules}
    assert versions["my-redis"] == "1.1.0"


def test_empty_template_gives_an_empty_set(node_platform: NodePlatform) -> None:
    p = node_platform
    creds = p.enroll()
    doc = p.node(creds, "GET", "/modules").json()
    assert doc["modules"] == []
    assert doc["composition"] is None
    assert parse_desired(doc).modules == ()


def test_version_without_digest_is_a_conflict_naming_it(node_platform: NodePlatform) -> None:
    p = node_platform
    _stack(p)
    creds = p.enroll()
    with p.engine.begin() as c:
        c.execute(update(NodeModuleVersion).values(composefs_digest=None))
    r = p.node(creds, "GET", "/modules")
    assert r.status_code == 409
    assert "has no valid composefs digest" in r.json()["detail"]


def test_version_with_a_malformed_digest_is_a_conflict_not_a_crash(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    _stack(p)
    creds = p.enroll()
    with p.engine.begin() as c:
        c.execute(update(NodeModuleVersion).values(composefs_digest="sha256:not-hex"))
    r = p.node(creds, "GET", "/modules")
    assert r.status_code == 409
    assert "'sha256:not-hex'" in r.json()["detail"]


def test_write_token_cannot_put_an_unapproved_version_on_the_fleet(
    node_platform: NodePlatform,
) -> None:
    """Issue 13 item 2: register 2.0.0, promote to blessed, assign → the node was told 2.0.0.

    The module requires approval and 1.0.0 is live. A write-only token may
    take 2.0.0 to staging and blessed and assign the module, yet an ordinary
    node keeps running 1.0.0 (live); only a test node is served 2.0.0.
    """
    p = node_platform
    publish(p, "my-redis", files=["/etc/redis.conf"], state="live",
            digest=_digest("my-redis", "1.0.0"))  # fmt: skip
    with p.engine.begin() as c:
        c.execute(update(NodeModule).values(require_approval=True, cosign_public_key=PUB))
    v2 = publish(p, "my-redis", "2.0.0", files=["/etc/redis.conf"], state="built",
                 digest=_digest("my-redis", "2.0.0"))  # fmt: skip
    for to in ("staging", "blessed"):
        r = p.call("POST", f"/node_module_versions/{v2['id']}/promote", role="write",
                   json={"to": to})  # fmt: skip
        assert r.status_code == 200, r.text
    r = p.call("POST", "/node_templates/base/assignments", role="write",
               json={"module_name": "my-redis"})  # fmt: skip
    assert r.status_code == 201, r.text
    doc = p.node(p.enroll(), "GET", "/modules").json()
    assert doc["allowed_states"] == ["live"]
    assert [(m["name"], m["version"]) for m in doc["modules"]] == [("my-redis", "1.0.0")]
    # The instance's drift report compares against the same set.
    iid = doc["instance_id"]
    drift = p.call("GET", f"/node_instances/{iid}/drift", role="read").json()
    assert [(m["name"], m["desired_version"]) for m in drift["modules"]] == [("my-redis", "1.0.0")]


def test_marking_a_test_node_needs_promote_live(node_platform: NodePlatform) -> None:
    """A test node runs staging and blessed versions: a write token cannot make one."""
    p = node_platform
    body = {"hostname": "canary-1", "node_template_id": "base", "metadata": {"test": True}}
    before = p.snapshot()
    r = p.call("POST", "/nodes", role="write", json=body)
    assert r.status_code == 403, r.text
    assert "promote-live" in r.json()["detail"]
    assert p.snapshot() == before
    r = p.call("POST", "/nodes", role="write", json={**body, "metadata": {"test": False}})
    assert r.status_code == 201, r.text
    r = p.call("POST", "/nodes", json={**body, "hostname": "canary-2"})
    assert r.status_code == 201, r.text
