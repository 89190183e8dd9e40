"""Drift reports: desired module set vs the instance's running_module_digests."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from powernode.platform.db import NodeInstance
from powernode.platform.services.drift import compare
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem
from tests.platform.test_preview import assign, publish


def instance(p: Platform, hostname: str, template: str = "base") -> str:
    r = p.call("POST", "/nodes", json={"hostname": hostname, "node_template_id": template})
    assert r.status_code == 201, r.text
    r = p.call("POST", "/node_instances", json={"node_id": hostname})
    assert r.status_code == 201, r.text
    iid: str = r.json()["instance"]["id"]
    return iid


def report(p: Platform, iid: str, running: dict[str, str]) -> dict[str, Any]:
    with p.engine.begin() as c:
        c.execute(
            update(NodeInstance)
            .where(NodeInstance.id == iid)
            .values(running_module_digests=running)
        )
    r = p.call("GET", f"/node_instances/{iid}/drift", role="read")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def stack(platform: Platform) -> Platform:
    publish(
        platform, "system-base", category="system-base", files=["/etc/os-release"], state="live"
    )
    publish(
        platform, "my-redis", files=["/etc/redis.conf"], requires=["acme/system-base"], state="live"
    )
    assign(platform, "base", "my-redis")
    return platform


def test_no_drift_when_the_instance_runs_the_desired_set(stack: Platform) -> None:
    iid = instance(stack, "redis-test-1")
    running = {"my-redis": "sha256:my-redis-1.0.0", "system-base": "sha256:system-base-1.0.0"}
    body = report(stack, iid, running)
    assert body["drift"] is False
    assert body["template_name"] == "base"
    assert [(m["name"], m["status"]) for m in body["modules"]] == [
        ("my-redis", "ok"),
        ("system-base", "ok"),
    ]


def test_every_kind_of_drift(stack: Platform) -> None:
    iid = instance(stack, "redis-test-1")
    body = report(stack, iid, {"my-redis": "sha256:old", "leftover": "sha256:x"})
    assert body["drift"] is True
    got = {
        m["name"]: (m["status"], m["desired_digest"], m["running_digest"]) for m in body["modules"]
    }
    assert got == {
        "leftover": ("unexpected", None, "sha256:x"),
        "my-redis": ("digest_differs", "sha256:my-redis-1.0.0", "sha256:old"),
        "system-base": ("missing", "sha256:system-base-1.0.0", None),
    }


def test_new_live_version_makes_running_instances_drift(stack: Platform) -> None:
    iid = instance(stack, "redis-test-1")
    running = {"my-redis": "sha256:my-redis-1.0.0", "system-base": "sha256:system-base-1.0.0"}
    assert report(stack, iid, running)["drift"] is False
    publish(stack, "my-redis", "1.1.0", files=["/etc/redis.conf"], state="live")
    body = report(stack, iid, running)
    assert body["drift"] is True
    [redis] = [m for m in body["modules"] if m["name"] == "my-redis"]
    assert (redis["status"], redis["desired_version"]) == ("digest_differs", "1.1.0")


def test_template_drift_lists_live_instances_only(stack: Platform) -> None:
    a = instance(stack, "redis-a")
    b = instance(stack, "redis-b")
    gone = instance(stack, "redis-c")
    assert stack.call("POST", f"/node_instances/{gone}/terminate").status_code == 200
    report(
        stack, a, {"my-redis": "sha256:my-redis-1.0.0", "system-base": "sha256:system-base-1.0.0"}
    )
    r = stack.call("GET", "/node_templates/base/drift", role="read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["drift"] is True
    assert [(i["hostname"], i["drift"]) for i in body["instances"]] == [
        ("redis-a", False),
        ("redis-b", True),
    ]
    assert {i["instance_id"] for i in body["instances"]} == {a, b}
    assert [m["name"] for m in body["desired"]] == ["system-base", "my-redis"]


def test_bad_inputs_change_nothing(stack: Platform) -> None:
    before = stack.snapshot()
    r = stack.call("GET", "/node_instances/no-such-id/drift", role="read")
    assert_problem(r, 404, "instance 'no-such-id' not found")
    r = stack.call("GET", "/node_templates/nope/drift", role="read")
    assert_problem(r, 404, "template 'nope' not found")
    r = stack.call("GET", "/node_templates/base/drift", role="read", params={"allowed_states": "x"})
    assert_problem(r, 422, "query.allowed_states", "'blessed'")
    assert stack.snapshot() == before


@pytest.mark.parametrize(
    ("desired", "running", "statuses"),
    [
        ({}, {}, []),
        ({"a": (None, "1.0.0")}, {"a": "sha256:anything"}, [("a", "ok")]),
        ({"a": ("sha256:1", "1.0.0")}, {"a": "sha256:1"}, [("a", "ok")]),
        ({"a": ("sha256:1", "1.0.0")}, {"a": "sha256:2"}, [("a", "digest_differs")]),
        ({"a": ("sha256:1", "1.0.0")}, {}, [("a", "missing")]),
        ({}, {"b": "sha256:1"}, [("b", "unexpected")]),
    ],
    ids=["empty", "no-digest-known", "ok", "differs", "missing", "unexpected"],
)
def test_compare(
    desired: dict[str, tuple[str | None, str]],
    running: dict[str, str],
    statuses: list[tuple[str, str]],
) -> None:
    assert [(m.name, m.status) for m in compare(desired, running)] == statuses
