"""Nodes and instances with the recording provider, on both databases."""

from __future__ import annotations

from typing import Any

import pytest

from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem


def node(p: Platform, hostname: str = "redis-test-1", template: str = "base") -> dict[str, Any]:
    r = p.call("POST", "/nodes", json={"hostname": hostname, "node_template_id": template})
    assert r.status_code == 201, r.text
    n: dict[str, Any] = r.json()["node"]
    return n


def test_create_provision_get_terminate(platform: Platform) -> None:
    n = node(platform)
    assert n["template_name"] == "base"
    r = platform.call("POST", "/node_instances", json={"node_id": n["id"]})
    assert r.status_code == 201, r.text
    inst = r.json()["instance"]
    assert inst["status"] == "provisioning"
    assert inst["provider"] == "recording"
    assert [q.hostname for q in platform.provider.provisioned] == ["redis-test-1"]
    got = platform.call("GET", f"/node_instances/{inst['id']}", role="read").json()["instance"]
    assert got["running_module_digests"] == {}
    assert got["provider_ref"] == f"recorded-{inst['id']}"
    r = platform.call("POST", f"/node_instances/{inst['id']}/terminate")
    assert r.json()["instance"]["status"] == "terminated"
    assert platform.provider.terminated == [f"recorded-{inst['id']}"]
    # A terminated node can get a new instance.
    assert (
        platform.call("POST", "/node_instances", json={"node_id": "redis-test-1"}).status_code
        == 201
    )
    listed = platform.call("GET", "/node_instances?node=redis-test-1").json()["instances"]
    assert [i["status"] for i in listed] == ["terminated", "provisioning"]
    kinds = [e[1] for e in platform.snapshot()["fleet_events"]]
    assert sorted(kinds) == sorted(
        ["node.created", "instance.provisioning", "instance.terminated", "instance.provisioning"]
    )


def test_reboot_power_cycles_through_the_provider_with_an_event_and_audit(
    platform: Platform,
) -> None:
    """POST …/reboot: the provider's reboot with the instance's reference, an
    ``instance.rebooted`` event and an audit entry; a reader is refused, an ended instance
    is a 409, an unknown one a 404, and a refusal changes nothing."""
    node(platform)
    inst = platform.call("POST", "/node_instances", json={"node_id": "redis-test-1"}).json()
    iid = inst["instance"]["id"]
    before = platform.snapshot()
    assert_problem(platform.call("POST", f"/node_instances/{iid}/reboot", role="read"), 403)
    assert_problem(platform.call("POST", "/node_instances/nope/reboot"), 404)
    assert platform.snapshot() == before and platform.provider.rebooted == []
    r = platform.call("POST", f"/node_instances/{iid}/reboot")
    assert r.status_code == 200, r.text
    assert r.json()["instance"]["id"] == iid
    assert platform.provider.rebooted == [f"recorded-{iid}"]
    after = platform.snapshot()
    assert [e for e in after["fleet_events"] if "instance.rebooted" in e]
    assert [a for a in after["audit_log"] if "instance.reboot" in a]
    platform.call("POST", f"/node_instances/{iid}/terminate")
    ended = platform.snapshot()
    assert_problem(platform.call("POST", f"/node_instances/{iid}/reboot"), 409, "terminated")
    assert platform.snapshot() == ended and len(platform.provider.rebooted) == 1


def test_list_and_get_nodes(platform: Platform) -> None:
    node(platform, "b-node")
    node(platform, "a-node", "hardened")
    nodes = platform.call("GET", "/nodes", role="read").json()["nodes"]
    assert [(x["hostname"], x["template_name"]) for x in nodes] == [
        ("a-node", "hardened"),
        ("b-node", "base"),
    ]
    assert platform.call("GET", "/nodes/a-node").json()["node"]["template_name"] == "hardened"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/nodes", {"hostname": "web-1", "node_template_id": "base"}, 409,
         "'web-1' already exists"),
        ("POST", "/nodes", {"hostname": "Bad_Host", "node_template_id": "base"}, 422,
         "RFC 1123"),
        ("POST", "/nodes", {"hostname": "web-2", "node_template_id": "gold"}, 404,
         "template 'gold' not found"),
        ("POST", "/node_instances", {"node_id": "web-1"}, 409, "terminate it first"),
        ("POST", "/node_instances", {"node_id": "ghost"}, 404, "node 'ghost' not found"),
        ("GET", "/node_instances/ghost", None, 404, "instance 'ghost' not found"),
        ("POST", "/node_instances/ghost/terminate", None, 404, "instance 'ghost' not found"),
    ],
)  # fmt: skip
def test_bad_node_requests_change_nothing(
    platform: Platform, *, method: str, path: str, body: Any, status: int, says: str
) -> None:
    node(platform, "web-1")
    assert platform.call("POST", "/node_instances", json={"node_id": "web-1"}).status_code == 201
    before = platform.snapshot()
    calls = len(platform.provider.provisioned)
    assert_problem(platform.call(method, path, json=body), status, says)
    assert platform.snapshot() == before
    assert len(platform.provider.provisioned) == calls


def test_terminating_twice_is_409(platform: Platform) -> None:
    n = node(platform)
    iid = platform.call("POST", "/node_instances", json={"node_id": n["id"]}).json()["instance"][
        "id"
    ]
    assert platform.call("POST", f"/node_instances/{iid}/terminate").status_code == 200
    before = platform.snapshot()
    assert_problem(
        platform.call("POST", f"/node_instances/{iid}/terminate"), 409, "already terminated"
    )
    assert platform.snapshot() == before
    assert len(platform.provider.terminated) == 1
