"""Templates and assignments (seed 003 phase 7), on both databases."""

from __future__ import annotations

from typing import Any

import pytest

from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem


def module(p: Platform, name: str, category: str = "userland", **kw: Any) -> None:
    body = {"name": name, "category_slug": category, **kw}
    assert p.call("POST", "/node_modules", json=body).status_code == 201


def assign(p: Platform, template: str, name: str, **kw: Any) -> dict[str, Any]:
    r = p.call("POST", f"/node_templates/{template}/assignments", json={"module_name": name, **kw})
    assert r.status_code == 201, r.text
    a: dict[str, Any] = r.json()["assignment"]
    return a


def test_seeded_templates(platform: Platform) -> None:
    r = platform.call("GET", "/node_templates", role="read")
    assert [t["name"] for t in r.json()["templates"]] == ["base", "hardened"]


def test_assign_computes_priority_from_category_and_variety(platform: Platform) -> None:
    module(platform, "system-base", "system-base")
    module(platform, "my-nginx")
    module(platform, "nginx-tokyo", variety="config", parent_module="my-nginx")
    a = assign(platform, "base", "my-nginx", metadata={"purpose": "edge-cdn-tokyo"})
    assert (a["priority"], a["effective_priority"], a["resolved_priority"]) == (90, None, 90)
    assert a["metadata"] == {"purpose": "edge-cdn-tokyo"}
    # Priorities are the operator's scale (category position); the variety
    # orders the config module above its parent at the same priority.
    assert assign(platform, "base", "nginx-tokyo")["priority"] == 90
    assert assign(platform, "base", "system-base")["priority"] == 10
    # The template by id works as well as by name; its stack is highest first.
    tid = a["template_id"]
    got = platform.call("GET", f"/node_templates/{tid}", role="read").json()["template"]
    assert got["name"] == "base"
    assert [x["module_name"] for x in got["assignments"]] == [
        "nginx-tokyo",
        "my-nginx",
        "system-base",
    ]


def test_update_assignment_overrides_and_clears_effective_priority(platform: Platform) -> None:
    module(platform, "my-nginx")
    a = assign(platform, "hardened", "my-nginx")
    path = f"/node_module_assignments/{a['id']}"
    r = platform.call("PATCH", path, json={"effective_priority": 95})
    assert r.status_code == 200, r.text
    got = r.json()["assignment"]
    assert (got["effective_priority"], got["resolved_priority"]) == (95, 95)
    # Metadata alone leaves the override in place.
    got = platform.call("PATCH", path, json={"metadata": {"a": 1}}).json()["assignment"]
    assert (got["effective_priority"], got["metadata"]) == (95, {"a": 1})
    got = platform.call("PATCH", path, json={"effective_priority": None}).json()["assignment"]
    assert (got["effective_priority"], got["resolved_priority"]) == (None, 90)
    log = platform.call("GET", "/audit_log?action=assignment.update").json()["audit_log"]
    assert log[-1]["detail"]["after"]["effective_priority"] == 95


def test_unassign(platform: Platform) -> None:
    module(platform, "my-redis")
    assign(platform, "base", "my-redis")
    r = platform.call("DELETE", "/node_templates/base/assignments/my-redis")
    assert r.status_code == 200
    assert platform.count("node_module_assignments") == 0
    assert platform.count("node_modules") == 1  # the module stays in the catalog


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/node_templates/base/assignments", {"module_name": "my-redis"}, 409,
         "already assigned"),
        ("POST", "/node_templates/gold/assignments", {"module_name": "my-redis"}, 404,
         "template 'gold' not found"),
        ("POST", "/node_templates/base/assignments", {"module_name": "my-redis",
         "effective_priority": -1}, 422, "effective_priority"),
        ("DELETE", "/node_templates/hardened/assignments/my-redis", None, 404,
         "not assigned to template 'hardened'"),
        ("PATCH", "/node_module_assignments/nope", {"effective_priority": 5}, 404,
         "assignment 'nope' not found"),
        ("PATCH", "/node_module_assignments/nope", {"effective_priority": "high"}, 422,
         "effective_priority"),
    ],
)  # fmt: skip
def test_bad_assignment_requests_change_nothing(
    platform: Platform, *, method: str, path: str, body: Any, status: int, says: str
) -> None:
    module(platform, "my-redis")
    assign(platform, "base", "my-redis")
    before = platform.snapshot()
    assert_problem(platform.call(method, path, json=body), status, says)
    assert platform.snapshot() == before
