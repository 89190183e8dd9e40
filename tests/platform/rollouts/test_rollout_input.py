"""Bad rollout requests: a clear error each, and nothing written (no promotion either)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from powernode.platform.db import AuditLogEntry, FleetEvent, Rollout
from powernode.platform.problems import InvalidInputError
from powernode.platform.services.rollout_policy import PolicyMismatchError, validate_policy
from powernode.platform.worker import IngestWorker
from tests.platform.nodeapi.conftest import NodePlatform
from tests.platform.rollouts.fleet import digest, make_fleet
from tests.platform.test_preview import publish

BAD: list[tuple[dict[str, Any], int, str]] = [
    ({"waves": [{"percent": 50}, {"percent": 40}]}, 409, "percentages sum to 90, not 100"),
    ({"waves": [{"percent": 100}], "max_failed": -1}, 422, "max_failed: Input should be greater"),
    ({"waves": []}, 422, "body.policy.waves: List should have at least 1 item"),
    ({"waves": [{"instances": []}]}, 422, "instances: List should have at least 1 item"),
    ({"waves": [{"labels": {"rack": "nowhere"}}]}, 409, "selects no instance (empty wave)"),
    ({"waves": [{"percent": 100}], "max_converging": 0}, 422, "max_converging"),
    ({"waves": [{"percent": 100}], "speed": 3}, 422, "speed: Extra inputs are not permitted"),
    ({"waves": [{"color": "red"}]}, 422, "color"),
    ({"waves": [{"percent": 100, "labels": {"a": "b"}}]}, 422, "Extra inputs are not permitted"),
    ({"waves": [{"instances": ["no-such-instance"]}]}, 409, "does not run a template"),
]


def _written(p: NodePlatform) -> tuple[int, int, int]:
    with Session(p.engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Rollout)) or 0,
            s.scalar(select(func.count()).select_from(AuditLogEntry)) or 0,
            s.scalar(select(func.count()).select_from(FleetEvent)) or 0,
        )


def test_bad_policies_and_versions_write_nothing(node_platform: NodePlatform) -> None:
    p = node_platform
    make_fleet(p, count=3)
    new = publish(p, "app", "2.0.0", files=["/etc/app.conf"], digest=digest("2.0.0"))
    first = publish(p, "other", "1.0.0", files=["/etc/o"], digest=digest("o"))
    before = _written(p)
    for policy, code, message in BAD:
        r = p.call("POST", f"/node_module_versions/{new['id']}/rollouts", json={"policy": policy})
        assert r.status_code == code, (policy, r.text)
        assert message in r.json()["detail"], (policy, r.json()["detail"])
    one_wave = {"policy": {"waves": [{"percent": 100}]}}
    r = p.call("POST", "/node_module_versions/nope/rollouts", json=one_wave)
    assert r.status_code == 404, r.text
    # A module with no live version yet: nodes outside a wave would have nothing.
    r = p.call("POST", f"/node_module_versions/{first['id']}/rollouts",
               json={"policy": {"waves": [{"percent": 100}]}})  # fmt: skip
    assert r.status_code == 409, r.text
    assert "has no live version yet" in r.json()["detail"]
    assert _written(p) == before
    for vid in (new["id"], first["id"]):
        v = p.call("GET", f"/node_module_versions/{vid}", role="read").json()["version"]
        assert v["promotion_state"] == "blessed"
    # Without promote-live: 403, nothing written.
    r = p.call("POST", f"/node_module_versions/{new['id']}/rollouts", role="write",
               json={"policy": {"waves": [{"percent": 100}]}})  # fmt: skip
    assert r.status_code == 403, r.text
    assert _written(p) == before
    assert p.call("POST", "/rollouts/nope/pause").status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_policy_defaults(db_url: str) -> None:
    checked = validate_policy({"waves": [{"labels": {"rack": "a"}}, {"percent": 100}]})
    assert checked["max_failed"] == 0 and checked["max_converging"] is None
    assert checked["deadline_seconds"] == 600
    with pytest.raises(InvalidInputError, match="pause_seconds"):
        validate_policy({"waves": [{"percent": 100}], "pause_seconds": True})
    with pytest.raises(InvalidInputError, match="soak_seconds must be an integer >= 0 and <="):
        validate_policy({"waves": [{"percent": 100}], "soak_seconds": 10**30})
    # What the API's schema refuses first, the service refuses too (CLI, MCP, tests).
    with pytest.raises(InvalidInputError, match="empty wave"):
        validate_policy({"waves": [{"instances": []}]})
    with pytest.raises(PolicyMismatchError, match="sum to 50"):
        validate_policy({"waves": [{"percent": 50}]})


def test_promote_to_live_can_carry_the_rollout(node_platform: NodePlatform) -> None:
    p = node_platform
    fleet = make_fleet(p, count=2)
    new = publish(p, "app", "2.0.0", files=["/etc/app.conf"], digest=digest("2.0.0"))
    waves = {"waves": [{"percent": 50}, {"percent": 50}]}
    path = f"/node_module_versions/{new['id']}/promote"
    r = p.call("POST", path, json={"to": "retired", "rollout": waves})
    assert r.status_code == 409, r.text
    assert "a rollout applies to a promotion to live, not to retired" in r.json()["detail"]
    r = p.call("POST", path, json={"to": "live", "rollout": waves, "rollout_template": "base"})
    assert r.status_code == 200, r.text
    assert r.json()["version"]["promotion_state"] == "live"
    (rollout,) = p.call("GET", "/rollouts", role="read").json()["rollouts"]
    assert rollout["version_id"] == new["id"] and rollout["state"] == "running"
    assert set(fleet.served().values()) == {"1.0.0"}  # live, but no wave admitted yet
    fleet.sync()
    assert sorted(fleet.served().values()) == ["1.0.0", "2.0.0"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_worker_round_ticks_and_a_silent_node_fails_its_deadline(
    node_platform: NodePlatform,
) -> None:
    p = node_platform
    fleet = make_fleet(p, count=2)
    new = publish(p, "app", "2.0.0", files=["/etc/app.conf"], digest=digest("2.0.0"))
    policy = {"waves": [{"percent": 100}], "deadline_seconds": 60, "max_failed": 0}
    r = p.call("POST", f"/node_module_versions/{new['id']}/rollouts", json={"policy": policy})
    rid = r.json()["rollout"]["id"]
    worker = IngestWorker(sessionmaker(p.engine), None, clock=p.clock)
    assert worker.run_once().rollouts == 1  # both admitted
    assert worker.run_once().rollouts == 0  # nothing to do until a node reports
    p.clock.advance(61)  # nobody heartbeats: past the deadline
    assert worker.run_once().rollouts == 1
    doc = p.call("GET", f"/rollouts/{rid}", role="read").json()["rollout"]
    assert doc["state"] == "halted"
    assert doc["waves"][0]["counts"] == {"failed": 2}
    assert set(fleet.served().values()) == {"1.0.0"}
