"""Template composition preview: assignments resolved through dependencies, then composed.

``publish`` (used by the drift tests too) registers a version the way ingest
does and promotes it step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from powernode.core.composition import Composition
from powernode.platform.services import catalog
from powernode.platform.services.context import SCOPES, Actor, Ctx
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem

STEPS = ("staging", "blessed", "live")


def publish(
    p: Platform,
    name: str,
    version: str = "1.0.0",
    *,
    category: str = "userland",
    variety: str = "subscription",
    parent: str | None = None,
    files: Sequence[str] = (),
    mask: Sequence[str] = (),
    protected: Sequence[str] = (),
    requires: Sequence[str] = (),
    provides: Sequence[str] = (),
    state: str = "blessed",
    digest: str | None = None,
) -> dict[str, Any]:
    """Create the module if needed, register ``version`` and promote it to ``state``."""
    if p.call("GET", f"/node_modules/{name}").status_code == 404:
        body: dict[str, Any] = {"name": name, "category_slug": category, "variety": variety}
        if parent:
            body["parent_module"] = parent
        r = p.call("POST", "/node_modules", json=body)
        assert r.status_code == 201, r.text
    manifest = {
        "name": name,
        "mask": list(mask),
        "protected_spec": list(protected),
        "dependencies": {"requires": list(requires), "provides": list(provides)},
    }
    with Session(p.engine) as session:
        # What the ingest worker records once it has verified an artifact: the
        # operator API cannot set digests or references (issue 13 item 2).
        ctx = Ctx(session, Actor("ingest-fake", None, frozenset(SCOPES)), datetime.now(UTC))
        vid = catalog.record_ingested_version(
            ctx,
            name,
            version_string=version,
            verified=catalog.VerifiedFields(
                composefs_digest=digest or f"sha256:{name}-{version}",
                artifact_ref=f"registry.test/default/modules/{name}:{version}",
            ),
            manifest=manifest,
            file_list=list(files),
        ).id
        session.commit()
    r = p.call("GET", f"/node_module_versions/{vid}", role="read")
    assert r.status_code == 200, r.text
    v: dict[str, Any] = r.json()["version"]
    for step in STEPS[: STEPS.index(state) + 1] if state in STEPS else ():
        r = p.call("POST", f"/node_module_versions/{v['id']}/promote", json={"to": step})
        assert r.status_code == 200, r.text
        v = r.json()["version"]
    return v


def assign(p: Platform, template: str, name: str, **kw: Any) -> dict[str, Any]:
    r = p.call("POST", f"/node_templates/{template}/assignments", json={"module_name": name, **kw})
    assert r.status_code == 201, r.text
    a: dict[str, Any] = r.json()["assignment"]
    return a


def composition(p: Platform, template: str = "base", **params: Any) -> dict[str, Any]:
    r = p.call("GET", f"/node_templates/{template}/composition", role="read", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_preview_resolves_dependencies_and_composes(platform: Platform) -> None:
    publish(
        platform,
        "system-base",
        "1.4.2",
        category="system-base",
        files=["/etc/", "/etc/shadow", "/etc/hosts"],
        protected=["/etc/shadow"],
    )
    publish(platform, "system-base", "2.0.0", category="system-base", state="built")
    publish(
        platform,
        "my-redis",
        files=["/etc/", "/etc/shadow", "/etc/hosts", "/etc/redis/redis.conf"],
        requires=["powernode/system-base@^1"],
    )
    assign(platform, "base", "my-redis")
    body = composition(platform)
    assert body["template"]["name"] == "base"
    assert body["allowed_states"] == ["blessed", "live"]
    mods = {m["name"]: m for m in body["modules"]}
    # system-base is not assigned: it comes in as a dependency, at 1.4.2 (2.0.0 is built only).
    assert [m["name"] for m in body["modules"]] == ["system-base", "my-redis"]
    assert mods["system-base"]["version_string"] == "1.4.2"
    assert mods["system-base"]["assigned"] is False
    assert mods["system-base"]["priority"] == 10
    assert "my-redis@1.0.0 requires account/system-base@^1" in mods["system-base"]["reason"]
    assert mods["my-redis"]["priority"] == 90
    comp = Composition.from_dict(body["composition"])
    winners = comp.winners()
    # my-redis (90) wins /etc/hosts over system-base (10); /etc/shadow stays system-base's
    # because system-base protects it.
    assert winners["/etc/hosts"] == "my-redis"
    assert winners["/etc/shadow"] == "system-base"
    assert [(d.path, d.module, d.reason) for d in comp.dropped] == [
        ("/etc/shadow", "my-redis", "protected")
    ]


def test_preview_honours_the_assignment_override_and_allowed_states(platform: Platform) -> None:
    publish(platform, "a-mod", files=["/x"])
    publish(platform, "b-mod", files=["/x"])
    publish(platform, "b-mod", "1.1.0", files=["/x", "/y"], state="staging")
    assign(platform, "base", "a-mod", effective_priority=95)
    assign(platform, "base", "b-mod")
    body = composition(platform)
    assert Composition.from_dict(body["composition"]).winners() == {"/x": "a-mod"}
    assert {m["name"]: m["version_string"] for m in body["modules"]}["b-mod"] == "1.0.0"
    # With staging allowed the resolver takes b-mod 1.1.0.
    body = composition(platform, allowed_states=["staging", "blessed", "live"])
    assert {m["name"]: m["version_string"] for m in body["modules"]}["b-mod"] == "1.1.0"
    assert Composition.from_dict(body["composition"]).winners() == {"/x": "a-mod", "/y": "b-mod"}


def test_config_module_takes_over_its_parents_protected_file(platform: Platform) -> None:
    publish(platform, "chrony", files=["/etc/chrony.conf"], protected=["/etc/chrony.conf"])
    publish(
        platform,
        "chrony-no-pool",
        variety="config",
        parent="chrony",
        files=["/etc/chrony.conf"],
        mask=["/etc/chrony.conf"],
    )
    assign(platform, "base", "chrony")
    assign(platform, "base", "chrony-no-pool")
    comp = Composition.from_dict(composition(platform)["composition"])
    assert comp.winners() == {"/etc/chrony.conf": "chrony-no-pool"}
    assert [(t.module, t.parent) for t in comp.takeovers] == [("chrony-no-pool", "chrony")]


def test_empty_template_composes_to_nothing(platform: Platform) -> None:
    body = composition(platform, "hardened")
    assert body["modules"] == []
    assert body["composition"] == {"modules": [], "union": [], "dropped": [], "takeovers": []}


def test_unresolvable_template_is_a_409_naming_the_chain(platform: Platform) -> None:
    publish(platform, "my-redis", requires=["powernode/system-base@^1"])
    publish(platform, "system-base", "1.0.0", category="system-base", state="staging")
    assign(platform, "base", "my-redis")
    before = platform.snapshot()
    r = platform.call("GET", "/node_templates/base/composition", role="read")
    body = assert_problem(
        r, 409, "template base does not resolve", "requires account/system-base@^1", "1.0.0 staging"
    )
    assert body["type"].endswith("/template-unresolvable")
    assert platform.snapshot() == before


def test_protected_collision_is_a_409_listing_the_conflict(platform: Platform) -> None:
    publish(platform, "one", files=["/etc/a"], protected=["/etc/a"])
    publish(platform, "two", files=["/etc/a"], protected=["/etc/a"])
    assign(platform, "base", "one")
    assign(platform, "base", "two")
    r = platform.call("GET", "/node_templates/base/composition", role="read")
    body = assert_problem(r, 409, "template base does not compose")
    assert body["conflicts"]


def test_bad_inputs(platform: Platform) -> None:
    r = platform.call("GET", "/node_templates/nope/composition", role="read")
    assert_problem(r, 404, "template 'nope' not found")
    r = platform.call(
        "GET", "/node_templates/base/composition", role="read", params={"allowed_states": "gold"}
    )
    assert_problem(r, 422, "query.allowed_states", "'blessed'")
    r = platform.raw("GET", "/api/v1/system/node_templates/base/composition")
    assert_problem(r, 401, "no API token")


def test_runbook_override_95_sits_above_userland(platform: Platform) -> None:
    """Issue 13 item 11, through the API: seed 003's ``effective_priority: 95``.

    On the old x10 scale 95 sat below system-base (100) and an instance module
    of userland (906), so both won the shared file.
    """
    publish(platform, "system-base", category="system-base", files=["/etc/", "/etc/motd"])
    publish(platform, "a-app", variety="instance", files=["/etc/", "/etc/motd"])
    publish(platform, "z-override", files=["/etc/", "/etc/motd"])
    for name in ("system-base", "a-app"):
        assign(platform, "base", name)
    a = assign(platform, "base", "z-override")
    r = platform.call("PATCH", f"/node_module_assignments/{a['id']}",
                      json={"effective_priority": 95})  # fmt: skip
    assert r.json()["assignment"]["resolved_priority"] == 95
    body = composition(platform)
    assert Composition.from_dict(body["composition"]).winners()["/etc/motd"] == "z-override"
    prios = {m["name"]: m["priority"] for m in body["modules"]}
    assert prios == {"system-base": 10, "a-app": 90, "z-override": 95}
