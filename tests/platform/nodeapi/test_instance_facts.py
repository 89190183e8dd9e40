"""GET /node_api/modules carries the instance's facts and each module's assignment
metadata (services/instance_facts.py), and the agent's placeholders render from them."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from powernode.agent.placeholders import facts_from, render
from powernode.errors import DataError
from powernode.platform.db import Node, NodeModuleAssignment
from tests.platform.nodeapi.conftest import NodePlatform
from tests.platform.nodeapi.test_modules import _stack


def test_platform_delivers_facts_and_metadata_and_they_render(node_platform: NodePlatform) -> None:
    p = node_platform
    _stack(p)
    with p.engine.begin() as c:
        c.execute(
            update(NodeModuleAssignment).values(
                assignment_metadata={"purpose": "edge-tokyo", "port": 6379}
            )
        )
    creds = p.enroll()  # makes the node
    with p.engine.begin() as c:
        c.execute(update(Node).values(node_metadata={"rack": "r12"}))
    doc = p.node(creds, "GET", "/modules").json()
    inst = doc["instance"]
    assert inst["id"] == creds.instance_id and inst["hostname"] and inst["template"] == "base"
    assert inst["node_metadata"] == {"rack": "r12"}
    mods = {m["name"]: m for m in doc["modules"]}
    assert mods["my-redis"]["metadata"] == {"purpose": "edge-tokyo", "port": 6379}
    assert mods["system-base"]["metadata"] == {}  # a dependency: no assignment of its own
    facts = facts_from(doc, mods["my-redis"])
    text = (
        "bind ${instance.hostname}:${metadata.port} # ${metadata.purpose} "
        "${instance.node_metadata.rack} $${literal}"
    )
    assert render(text, facts, "etc/redis.conf") == (
        f"bind {inst['hostname']}:6379 # edge-tokyo r12 ${{literal}}"
    )
    with pytest.raises(
        DataError, match=r"etc/redis.conf: placeholder \$\{metadata.owner\} names no fact"
    ):
        render("owner ${metadata.owner}", facts, "etc/redis.conf")
