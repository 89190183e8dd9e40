"""Modules and versions through the REST API, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from powernode.platform.sealing import Sealer, load_or_create_key
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem

REDIS: dict[str, Any] = {
    "name": "my-redis",
    "category_slug": "userland",
    "variety": "subscription",
    "gitea_repo_full_name": "acme/modules/my-redis-module",
    "cosign_identity_regexp": r"^https://registry\.example\.com/acme/modules/my-redis-module@.*$",
    "cosign_issuer_regexp": r"^https://gitea\.ipnode\.org$",
}


def create(p: Platform, **over: Any) -> dict[str, Any]:
    resp = p.call("POST", "/node_modules", json={**REDIS, **over})
    assert resp.status_code == 201, resp.text
    module: dict[str, Any] = resp.json()["module"]
    return module


def test_categories_are_seeded_in_position_order(platform: Platform) -> None:
    resp = platform.call("GET", "/node_module_categories", role="read")
    assert [c["slug"] for c in resp.json()["categories"]] == [
        "system-base",
        "network-overlay",
        "container-runtimes",
        "security-hardening",
        "userland",
    ]


def test_create_module_returns_webhook_secret_once_and_stores_it_sealed(
    platform: Platform,
) -> None:
    m = create(platform)
    secret = m["webhook_secret"]
    assert len(secret) >= 40
    assert m["category_slug"] == "userland" and m["variety"] == "subscription"
    got = platform.call("GET", "/node_modules/my-redis", role="read").json()["module"]
    assert "webhook_secret" not in got
    listed = platform.call("GET", "/node_modules", role="read").json()["modules"]
    assert [x["name"] for x in listed] == ["my-redis"]
    # Nowhere in the database in clear; the sealed value opens to it with the key.
    snap = platform.snapshot()
    assert not any(secret in cell for rows in snap.values() for r in rows for cell in r)
    with platform.engine.connect() as c:
        sealed = c.exec_driver_sql("SELECT webhook_secret_sealed FROM node_modules").scalar_one()
    settings = platform.app.state.platform.settings
    sealer = Sealer(load_or_create_key(settings.effective_secret_key_file))
    assert sealer.open(sealed, m["id"]) == secret


def test_create_module_with_public_key_policy(platform: Platform) -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    m = create(
        platform, name="signed", cosign_identity_regexp=None, cosign_issuer_regexp=None,
        cosign_public_key=pem,
    )  # fmt: skip
    assert m["cosign_public_key"] == pem


def test_config_module_names_its_parent(platform: Platform) -> None:
    create(platform)
    child = create(platform, name="redis-tokyo", variety="config", parent_module="my-redis")
    assert child["parent_module"] == "my-redis"
    # The parent cannot go while a config module overrides it.
    before = platform.snapshot()
    resp = platform.call("DELETE", "/node_modules/my-redis")
    assert_problem(resp, 409, "redis-tokyo", "delete those first")
    assert platform.snapshot() == before


def _held_module(p: Platform) -> None:
    """my-redis with 0.1.0 live, 0.2.0 built, assigned to template base."""
    create(p)
    for v in ("0.1.0", "0.2.0"):
        r = p.call("POST", "/node_modules/my-redis/versions", json={"version_string": v})
        assert r.status_code == 201
        if v == "0.1.0":
            vid = r.json()["version"]["id"]
            for to in ("staging", "blessed", "live"):
                r = p.call("POST", f"/node_module_versions/{vid}/promote", json={"to": to})
                assert r.status_code == 200, r.text
    r = p.call("POST", "/node_templates/base/assignments", json={"module_name": "my-redis"})
    assert r.status_code == 201


@pytest.mark.parametrize("role", ["write", "admin"])
def test_delete_module_that_is_live_or_assigned_is_refused_naming_what_holds_it(
    platform: Platform, role: str
) -> None:
    """Issue 13 item 8: it cascaded silently, with a write-only token."""
    _held_module(platform)
    before = platform.snapshot()
    resp = platform.call("DELETE", "/node_modules/my-redis", role=role)
    assert_problem(resp, 409, "live version(s) 0.1.0", "template(s) base", "--force")
    assert resp.json()["live_versions"] == ["0.1.0"]
    assert resp.json()["templates"] == ["base"]
    assert platform.snapshot() == before


def test_forced_delete_needs_promote_live(platform: Platform) -> None:
    _held_module(platform)
    before = platform.snapshot()
    resp = platform.call("DELETE", "/node_modules/my-redis", role="write", params={"force": True})
    assert_problem(resp, 403, "promote-live")
    assert platform.snapshot() == before
    resp = platform.call("DELETE", "/node_modules/my-redis", params={"force": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["deleted"] == {"module": "my-redis", "versions": 2, "assignments": 1}
    assert platform.count("node_modules") == 0
    assert platform.count("node_module_versions") == 0
    assert platform.count("node_module_assignments") == 0
    [entry] = platform.call("GET", "/audit_log?action=module.delete").json()["audit_log"]
    assert entry["detail"]["forced"] is True
    assert (entry["detail"]["live_versions"], entry["detail"]["templates"]) == (["0.1.0"], ["base"])


def test_delete_module_that_is_neither_live_nor_assigned_needs_write_only(
    platform: Platform,
) -> None:
    create(platform)
    for v in ("0.1.0", "0.2.0"):
        r = platform.call("POST", "/node_modules/my-redis/versions", json={"version_string": v})
        assert r.status_code == 201
    resp = platform.call("DELETE", "/node_modules/my-redis", role="write")
    assert resp.status_code == 200, resp.text
    assert resp.json()["deleted"] == {"module": "my-redis", "versions": 2, "assignments": 0}
    assert platform.count("node_modules") == 0
    assert platform.count("node_module_versions") == 0


def test_versions_are_listed_newest_first(platform: Platform) -> None:
    create(platform)
    for v in ("0.9.0", "0.10.0", "0.10.0-rc.1"):
        body = {"version_string": v, "file_list": ["/etc/redis/redis.conf"]}
        assert (
            platform.call("POST", "/node_modules/my-redis/versions", json=body).status_code == 201
        )
    vs = platform.call("GET", "/node_modules/my-redis/versions", role="read").json()["versions"]
    assert [v["version_string"] for v in vs] == ["0.10.0", "0.10.0-rc.1", "0.9.0"]
    assert {v["promotion_state"] for v in vs} == {"built"}
    assert vs[0]["composefs_digest"] is None and vs[0]["cosign_verified"] is False
    assert vs[0]["file_count"] == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("cosign_verified", True, id="cosign_verified"),
        pytest.param(
            "artifact_ref",
            "evil.example/acme/modules/my-redis@sha256:" + "ab" * 32,
            id="artifact_ref-other-host",
        ),
        pytest.param("composefs_digest", "sha256:" + "ab" * 32, id="composefs_digest"),
        pytest.param("fsverity_root_hash", "sha256:" + "cd" * 32, id="fsverity_root_hash"),
        pytest.param("sbom_ref", "evil.example/sbom", id="sbom_ref"),
    ],
)
def test_only_ingest_sets_what_verification_found(
    platform: Platform, field: str, value: object
) -> None:
    """Issue 13 item 2: a write token set artifact_ref to another host and cosign_verified."""
    create(platform)
    before = platform.snapshot()
    body = {"version_string": "1.0.0", field: value}
    resp = platform.call("POST", "/node_modules/my-redis/versions", json=body, role="write")
    assert_problem(resp, 422, field)
    assert platform.snapshot() == before


BAD_CREATES = [
    pytest.param({"category_slug": "nope"}, 422, ["'nope'", "userland"], id="unknown-category"),
    pytest.param({"name": "My Redis"}, 422, ["module name"], id="bad-name"),
    pytest.param({"variety": "plugin"}, 422, ["variety"], id="unknown-variety"),
    pytest.param({"variety": "config"}, 422, ["parent_module"], id="config-without-parent"),
    pytest.param(
        {"variety": "config", "parent_module": "ghost"}, 404, ["'ghost'"], id="unknown-parent"
    ),
    pytest.param({"parent_module": "x"}, 422, ["only for config"], id="parent-on-subscription"),
    pytest.param(
        {"cosign_identity_regexp": "^(unclosed"}, 422, ["cosign_identity_regexp", "regular"],
        id="bad-regexp",
    ),
    pytest.param({"cosign_issuer_regexp": None}, 422, ["both"], id="half-keyless-policy"),
    pytest.param({"cosign_public_key": "not a key"}, 422, ["PEM"], id="bad-public-key"),
    pytest.param({"colour": "red"}, 422, ["colour"], id="unknown-field"),
    pytest.param({"name": "x" * 129}, 422, ["name"], id="name-too-long"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "status", "says"), BAD_CREATES)
def test_bad_create_changes_nothing(
    platform: Platform, change: dict[str, Any], status: int, says: list[str]
) -> None:
    before = platform.snapshot()
    resp = platform.call("POST", "/node_modules", json={**REDIS, **change})
    assert_problem(resp, status, *says)
    assert platform.snapshot() == before


def test_duplicate_module_name_is_409_and_changes_nothing(platform: Platform) -> None:
    first = create(platform)
    before = platform.snapshot()
    resp = platform.call("POST", "/node_modules", json=REDIS)
    assert_problem(resp, 409, "'my-redis' already exists")
    assert platform.snapshot() == before
    got = platform.call("GET", "/node_modules/my-redis").json()["module"]
    assert got["id"] == first["id"]


def test_oversized_body_is_413_and_changes_nothing(platform: Platform) -> None:
    before = platform.snapshot()
    big = {**REDIS, "description": "x" * (2 << 20)}
    resp = platform.call("POST", "/node_modules", json=big)
    body = assert_problem(resp, 413, "limit is 1048576 bytes")
    assert body["max_body_bytes"] == 1 << 20
    assert platform.snapshot() == before


def test_unknown_module_is_404_everywhere_and_changes_nothing(platform: Platform) -> None:
    before = platform.snapshot()
    for method, path, body in [
        ("GET", "/node_modules/ghost", None),
        ("DELETE", "/node_modules/ghost", None),
        ("GET", "/node_modules/ghost/versions", None),
        ("POST", "/node_modules/ghost/versions", {"version_string": "1.0.0"}),
        ("POST", "/node_templates/base/assignments", {"module_name": "ghost"}),
    ]:
        assert_problem(platform.call(method, path, json=body), 404, "'ghost' not found")
    assert platform.snapshot() == before


@pytest.mark.parametrize(
    ("version", "status", "says"),
    [("1.0", 422, "version_string"), ("0.1.0", 409, "already has version 0.1.0")],
)
def test_bad_version_changes_nothing(
    platform: Platform, version: str, status: int, says: str
) -> None:
    create(platform)
    platform.call("POST", "/node_modules/my-redis/versions", json={"version_string": "0.1.0"})
    before = platform.snapshot()
    resp = platform.call(
        "POST", "/node_modules/my-redis/versions", json={"version_string": version}
    )
    assert_problem(resp, status, says)
    assert platform.snapshot() == before


@pytest.mark.parametrize(
    ("field", "pattern", "column"),
    [
        ("file_spec", "etc/../../root/.ssh/**", 5),
        ("mask", "/etc/./x", 6),
        ("protected_spec", "/etc//x", 6),
    ],
)
def test_register_refuses_a_pattern_that_can_never_match(
    platform: Platform, field: str, pattern: str, column: int
) -> None:
    """Regression (issue 13 item 14): register took any manifest, globs unchecked."""
    create(platform)
    before = platform.snapshot()
    body = {"version_string": "1.0.0", "manifest": {"name": "my-redis", field: ["/ok", pattern]}}
    resp = platform.call("POST", "/node_modules/my-redis/versions", json=body)
    assert_problem(resp, 422, f"manifest.{field}[1] column {column}: glob {pattern!r}")
    assert resp.json()["field"] == f"manifest.{field}[1]"
    assert resp.json()["column"] == column
    assert platform.snapshot() == before


def test_openapi_describes_the_operations(platform: Platform) -> None:
    spec = platform.raw("GET", "/openapi.json").json()
    paths = spec["paths"]
    for p in [
        "/api/v1/system/node_modules",
        "/api/v1/system/node_modules/{name}/versions",
        "/api/v1/system/node_module_versions/{version_id}/promote",
        "/api/v1/system/node_templates/{template}/assignments",
        "/api/v1/system/node_module_assignments/{assignment_id}",
        "/api/v1/system/nodes",
        "/api/v1/system/node_instances/{instance_id}/terminate",
    ]:
        assert p in paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_unknown_route_is_a_problem(platform: Platform) -> None:
    assert_problem(platform.call("GET", "/nowhere"), 404, "/openapi.json")
