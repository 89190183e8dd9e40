"""Tokens, scopes and the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from powernode.platform.problems import InvalidInputError
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.tokens import create_token, hash_secret
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem

MODULE = {"name": "m1", "category_slug": "userland"}


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "no API token"),
        ({"Authorization": "Bearer nonsense"}, "not a powernode API token"),
        ({"Authorization": "Bearer pnt_unknown"}, "unknown API token"),
    ],
)
def test_requests_without_a_valid_token_are_401(
    platform: Platform, headers: dict[str, str], says: str
) -> None:
    before = platform.snapshot()
    for method, path, body in [("GET", "/node_modules", None), ("POST", "/node_modules", MODULE)]:
        r = platform.raw(method, "/api/v1/system" + path, headers=headers, json=body)
        assert_problem(r, 401, says)
        assert r.headers["www-authenticate"] == "Bearer"
    assert platform.snapshot() == before


def test_read_token_reads_but_cannot_write(platform: Platform) -> None:
    assert platform.call("GET", "/node_modules", role="read").status_code == 200
    before = platform.snapshot()
    for method, path, body in [
        ("POST", "/node_modules", MODULE),
        ("DELETE", "/node_modules/m1", None),
        ("POST", "/nodes", {"hostname": "n1", "node_template_id": "base"}),
        ("POST", "/node_templates/base/assignments", {"module_name": "m1"}),
    ]:
        assert_problem(platform.call(method, path, role="read", json=body), 403, "'write' scope")
    assert platform.snapshot() == before


def test_promote_live_token_also_reads(platform: Platform) -> None:
    assert platform.call("GET", "/node_templates", role="approver").status_code == 200


def test_expired_and_revoked_tokens_are_refused(platform: Platform, fixed_now: datetime) -> None:
    with Session(platform.engine) as s:
        ctx = Ctx(s, Actor("setup", None, frozenset({"write"})), fixed_now - timedelta(days=2))
        _, expired = create_token(ctx, "old", ["read"], expires_at=fixed_now - timedelta(days=1))
        s.commit()
    r = platform.raw(
        "GET", "/api/v1/system/node_modules", headers={"Authorization": f"Bearer {expired}"}
    )
    assert_problem(r, 401, "'old' expired")


def test_token_secret_is_stored_only_as_a_hash(platform: Platform) -> None:
    snap = platform.snapshot()
    cells = [c for rows in snap.values() for r in rows for c in r]
    for secret in platform.tokens.values():
        assert secret not in cells
        assert hash_secret(secret) in cells


def test_bad_token_requests(platform: Platform, fixed_now: datetime) -> None:
    with Session(platform.engine) as s:
        ctx = Ctx(s, Actor("setup", None, frozenset()), fixed_now)
        with pytest.raises(InvalidInputError, match="choose from read, write, promote-live"):
            create_token(ctx, "x", ["admin"])
        with pytest.raises(InvalidInputError, match="token name"):
            create_token(ctx, "has space", ["read"])
        with pytest.raises(InvalidInputError, match="in the past"):
            create_token(ctx, "x", ["read"], expires_at=datetime(2000, 1, 1, tzinfo=UTC))


def test_every_write_is_audited_with_its_token(platform: Platform) -> None:
    assert platform.call("POST", "/node_modules", json=MODULE).status_code == 201
    r = platform.call("POST", "/node_modules/m1/versions", json={"version_string": "1.0.0"})
    vid = r.json()["version"]["id"]
    platform.call("POST", f"/node_module_versions/{vid}/promote", json={"to": "staging"})
    a = platform.call("POST", "/node_templates/base/assignments", json={"module_name": "m1"})
    platform.call("PATCH", f"/node_module_assignments/{a.json()['assignment']['id']}", json={})
    n = platform.call("POST", "/nodes", json={"hostname": "n1", "node_template_id": "base"})
    assert n.status_code == 201
    i = platform.call("POST", "/node_instances", json={"node_id": "n1"}).json()["instance"]
    platform.call("POST", f"/node_instances/{i['id']}/terminate")
    platform.call("DELETE", "/node_templates/base/assignments/m1")
    platform.call("DELETE", "/node_modules/m1")
    log = platform.call("GET", "/audit_log", role="read").json()["audit_log"]
    writes = [e for e in log if e["actor"] == "admin"]
    assert [e["action"] for e in reversed(writes)] == [
        "module.create",
        "module_version.register",
        "module_version.promote",
        "template.assign_module",
        "assignment.update",
        "node.create",
        "instance.provision",
        "instance.terminate",
        "template.unassign_module",
        "module.delete",
    ]
    assert all(e["token_id"] for e in writes)
    # Reads write nothing.
    before = platform.snapshot()
    platform.call("GET", "/node_modules", role="read")
    platform.call("GET", "/audit_log", role="read")
    assert platform.snapshot() == before
