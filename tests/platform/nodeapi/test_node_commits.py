"""``POST /node_api/module_versions``: a node-made version (``powernode-agent commit``) recorded
as ``built``, attributed to the instance, on SQLite and PostgreSQL.

The announcement is the agent's own record (``node.records.CommitRequest``), signed by the
agent's code (``signing.nodecommit``); the refusals — a module not of the instance variety,
one not assigned to the node's template, a signature by another node's key or by the
node's previous key, a revoked or superseded certificate, a version already taken — each
say why and write nothing (no version, no event, no audit entry).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from powernode.node.records import CommitAnswer
from powernode.platform.db import AuditLogEntry, FleetEvent, NodeModuleVersion
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.signing.nodecommit import CommitStatement
from tests.platform.nodeapi.conftest import Creds, NodePlatform, csr_pem
from tests.platform.test_preview import assign

PATH = "/module_versions"
MANIFEST: dict[str, Any] = {"name": "site", "file_spec": ["/etc/site/**"], "mask": []}
FILES = ["/etc", "/etc/site", "/etc/site/new.conf"]


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _module(p: NodePlatform, name: str, variety: str) -> None:
    body = {"name": name, "category_slug": "userland", "variety": variety}
    r = p.call("POST", "/node_modules", json=body)
    assert r.status_code == 201, r.text


def announcement(
    creds: Creds,
    module: str = "site",
    version: str = "1.0.1-node.1",
    *,
    key: Ed25519PrivateKey | None = None,
    instance_id: str | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    """The body the agent sends (agent/commit.py ``announcement``), signed by ``key``."""
    body: dict[str, Any] = {
        "module": module,
        "version": version,
        "composefs_digest": digest or _digest(f"{module}-{version}"),
        "manifest_digest": _digest(f"manifest-{module}-{version}"),
        "reference": f"acme/modules/{module}@{_digest(f'manifest-{module}-{version}')}",
        "manifest": {**MANIFEST, "name": module},
        "file_list": FILES,
    }
    statement = CommitStatement(instance_id=instance_id or creds.instance_id, **body)
    body["signature"] = statement.sign(key or creds.key)
    return body


def _written(p: NodePlatform) -> tuple[int, int, int]:
    """(versions, commit events, commit audit entries)."""
    with Session(p.engine) as s:
        return (
            s.scalar(select(func.count()).select_from(NodeModuleVersion)) or 0,
            s.scalar(
                select(func.count())
                .select_from(FleetEvent)
                .where(FleetEvent.kind == "module.version_committed")
            )
            or 0,
            s.scalar(
                select(func.count())
                .select_from(AuditLogEntry)
                .where(AuditLogEntry.action == "module_version.commit")
            )
            or 0,
        )


@pytest.fixture
def site(node_platform: NodePlatform) -> NodePlatform:
    """Module ``site`` (instance variety) assigned to template base; ``plain`` (subscription)
    assigned too; ``lonely`` (instance variety) assigned to no template."""
    p = node_platform
    _module(p, "site", "instance")
    _module(p, "plain", "subscription")
    _module(p, "lonely", "instance")
    assign(p, "base", "site")
    assign(p, "base", "plain")
    return p


def _refused(r: Any, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    for w in words:
        assert w in detail, detail


def test_a_node_made_version_is_recorded_as_built_and_attributed(site: NodePlatform) -> None:
    p = site
    creds = p.enroll()
    before = _written(p)
    r = p.node(creds, "POST", PATH, json=announcement(creds))
    assert r.status_code == 201, r.text
    answer = CommitAnswer.from_json(r.json())  # the agent's record reads it
    assert answer.created and answer.promotion_state == "built"
    assert answer.committed_by_instance_id == creds.instance_id
    assert (answer.module, answer.version) == ("site", "1.0.1-node.1")
    assert _written(p) == (before[0] + 1, 1, 1)
    # The operator API shows who made it; nothing promoted it.
    v = p.call("GET", f"/node_module_versions/{answer.version_id}", role="read").json()["version"]
    assert v["committed_by_instance_id"] == creds.instance_id
    assert v["promotion_state"] == "built" and v["promoted_at"] is None
    assert v["composefs_digest"] == _digest("site-1.0.1-node.1")
    assert v["artifact_ref"].startswith("acme/modules/site@sha256:")
    assert v["file_count"] == len(FILES)
    with Session(p.engine) as s:
        (event,) = s.scalars(
            select(FleetEvent).where(FleetEvent.kind == "module.version_committed")
        )
        assert event.instance_id == creds.instance_id
        assert event.payload["version_id"] == answer.version_id
        assert event.payload["cert_serial"] == creds.serial
        (entry,) = s.scalars(
            select(AuditLogEntry).where(AuditLogEntry.action == "module_version.commit")
        )
        assert entry.actor == f"instance:{creds.instance_id}"
        assert entry.target_id == answer.version_id
    # The same announcement again: the recorded version, nothing written.
    r = p.node(creds, "POST", PATH, json=announcement(creds))
    assert r.status_code == 200, r.text
    again = CommitAnswer.from_json(r.json())
    assert not again.created and again.version_id == answer.version_id
    assert _written(p) == (before[0] + 1, 1, 1)


def test_a_module_not_of_the_instance_variety_is_refused(site: NodePlatform) -> None:
    p = site
    creds = p.enroll()
    before = _written(p)
    r = p.node(creds, "POST", PATH, json=announcement(creds, "plain"))
    _refused(r, 403, "module 'plain' is of the subscription variety", "instance-variety")
    r = p.node(creds, "POST", PATH, json=announcement(creds, "ghost"))
    _refused(r, 404, "module 'ghost' does not exist")
    assert _written(p) == before


def test_a_module_not_assigned_to_the_nodes_template_is_refused(site: NodePlatform) -> None:
    p = site
    creds = p.enroll()
    before = _written(p)
    r = p.node(creds, "POST", PATH, json=announcement(creds, "lonely"))
    _refused(r, 403, "module 'lonely' is not assigned to template 'base'", creds.instance_id)
    assert _written(p) == before


def test_a_signature_by_another_key_is_refused(site: NodePlatform) -> None:
    p = site
    creds, other = p.enroll(), p.enroll()
    before = _written(p)
    # Signed by another node's key (its statement, its instance): refused for this caller.
    r = p.node(creds, "POST", PATH, json=announcement(other))
    _refused(r, 403, "not signed by the key of instance", creds.instance_id, creds.serial)
    # Signed with the other node's key for this instance: refused too.
    body = announcement(creds, key=other.key)
    _refused(p.node(creds, "POST", PATH, json=body), 403, "does not verify with key")
    # A field changed after signing: refused.
    body = announcement(creds)
    body["file_list"] = [*FILES, "/etc/site/smuggled"]
    _refused(p.node(creds, "POST", PATH, json=body), 403, "not signed by the key")
    # Not base64.
    body = {**announcement(creds), "signature": "not base64!"}
    _refused(p.node(creds, "POST", PATH, json=body), 403, "not base64")
    assert _written(p) == before


def test_a_revoked_or_superseded_certificate_is_refused(site: NodePlatform) -> None:
    p = site
    p.state.node_policy = NodeApiPolicy(rotate_min_interval=timedelta(0))
    creds = p.enroll()
    before = _written(p)
    # Rotation: the new certificate, used once, supersedes the old one.
    key = Ed25519PrivateKey.generate()
    r = p.node(creds, "POST", "/certificates/rotate", json={"csr_pem": csr_pem(key)})
    assert r.status_code == 200, r.text
    new = Creds(creds.instance_id, key, r.json()["certificate_pem"])
    # Signed with the old key, presented with the new certificate: not the live key.
    r = p.node(new, "POST", PATH, json=announcement(creds))
    _refused(r, 403, "not signed by the key of instance", new.serial)
    # The old certificate itself: refused by authentication.
    r = p.node(creds, "POST", PATH, json=announcement(creds))
    assert r.status_code == 401, r.text
    # Revoked: every certificate of the instance stops.
    r = p.call("POST", f"/node_instances/{creds.instance_id}/certificates/revoke")
    assert r.status_code == 200, r.text
    r = p.node(new, "POST", PATH, json=announcement(new))
    _refused(r, 401, "revoked")
    assert _written(p) == before


def test_a_version_already_taken_is_a_conflict(site: NodePlatform) -> None:
    p = site
    creds, other = p.enroll(), p.enroll()
    r = p.node(creds, "POST", PATH, json=announcement(creds))
    assert r.status_code == 201, r.text
    before = _written(p)
    # Another instance, same version string.
    r = p.node(other, "POST", PATH, json=announcement(other))
    _refused(r, 409, "already has version 1.0.1-node.1", f"made by instance {creds.instance_id}")
    # The same instance, another digest.
    body = announcement(creds, digest=_digest("different"))
    _refused(p.node(creds, "POST", PATH, json=body), 409, "versions are immutable")
    # Not SemVer: a clear 422, nothing written.
    r = p.node(creds, "POST", PATH, json=announcement(creds, version="not-a-version"))
    _refused(r, 422, "version_string")
    assert _written(p) == before


def test_a_malformed_announcement_names_the_field(site: NodePlatform) -> None:
    p = site
    creds = p.enroll()
    before = _written(p)
    body = {**announcement(creds), "composefs_digest": "md5:abc"}
    r = p.node(creds, "POST", PATH, json=body)
    assert r.status_code == 422, r.text
    assert "composefs_digest" in r.text
    body = {**announcement(creds), "extra": 1}
    r = p.node(creds, "POST", PATH, json=body)
    assert r.status_code == 422 and "extra" in r.text
    assert _written(p) == before


def test_concurrent_announcements_record_one_version(site: NodePlatform) -> None:
    """The module row is locked before the version is looked for: of the same announcement
    sent at once, one creates, the others find it; of two instances racing for one version
    string, one wins and the other is a 409."""
    from concurrent.futures import ThreadPoolExecutor

    p = site
    creds, other = p.enroll(), p.enroll()
    body = announcement(creds)
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(
            pool.map(lambda _: p.node(creds, "POST", PATH, json=body).status_code, range(4))
        )
    assert codes == [200, 200, 200, 201]
    bodies = [
        (creds, announcement(creds, version="2.0.0")),
        (other, announcement(other, version="2.0.0")),
    ]
    with ThreadPoolExecutor(2) as pool:
        codes = sorted(
            pool.map(lambda cb: p.node(cb[0], "POST", PATH, json=cb[1]).status_code, bodies)
        )
    assert codes == [201, 409]
    assert _written(p)[1:] == (2, 2)
