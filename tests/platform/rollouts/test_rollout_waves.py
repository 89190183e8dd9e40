"""Rollouts in waves (issue 19 item 4), 20 nodes driven through the real node API.

A bad version halts on the wave where its attach fails and rolls that wave
back; a good one completes; pause, resume and abort change what nodes are
served; replacing every platform process mid-rollout changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from powernode.platform.db import AuditLogEntry, FleetEvent, Rollout
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.rollouts import cas
from tests.platform.nodeapi.conftest import NodePlatform
from tests.platform.rollouts.fleet import Fleet, digest, make_fleet, restart, rollout
from tests.platform.test_preview import publish

WAVES = {"waves": [{"percent": 10}, {"percent": 30}, {"percent": 60}]}
MAX_ROUNDS = 30


def _start(p: NodePlatform, version_id: str, policy: dict[str, object]) -> str:
    r = p.call("POST", f"/node_module_versions/{version_id}/rollouts", json={"policy": policy})
    assert r.status_code == 201, r.text
    rid: str = r.json()["rollout"]["id"]
    return rid


def _waves(p: NodePlatform, rid: str) -> list[set[str]]:
    return [set(w["instances"]) for w in rollout(p, rid)["waves"]]


def _run_until_settled(fleet: Fleet, rid: str) -> dict[str, object]:
    for _ in range(MAX_ROUNDS):
        fleet.sync()
        doc = rollout(fleet.p, rid)
        if doc["state"] != "running":
            return doc
    raise AssertionError(f"rollout still running after {MAX_ROUNDS} rounds")


def _kinds(p: NodePlatform) -> list[str]:
    with Session(p.engine) as s:
        return list(s.scalars(select(FleetEvent.kind).where(FleetEvent.kind.like("rollout.%"))))


def _audits(p: NodePlatform) -> list[str]:
    with Session(p.engine) as s:
        q = select(AuditLogEntry.action).where(AuditLogEntry.action.like("rollout.%"))
        return list(s.scalars(q))


def test_bad_version_halts_on_wave_two_and_rolls_it_back(node_platform: NodePlatform) -> None:
    p = node_platform
    fleet = make_fleet(p)
    bad = publish(p, "app", "2.0.0", files=["/etc/app.conf"], digest=digest("2.0.0"))
    rid = _start(p, bad["id"], {**WAVES, "max_failed": 1})
    w1, w2, w3 = _waves(p, rid)
    assert (len(w1), len(w2), len(w3)) == (2, 6, 12)
    # Nothing is served the new version before the first tick admits wave 1.
    assert set(fleet.served().values()) == {"1.0.0"}
    # Its attach fails on wave 2's machines (more than max_failed=1 of them).
    fleet.broken[digest("2.0.0")] = set(w2)
    doc = _run_until_settled(fleet, rid)
    assert doc["state"] == "halted"
    assert doc["current_wave"] == 2
    assert "wave 2: 6 instance(s) failed" in str(doc["reason"])
    states = [w["counts"] for w in doc["waves"]]
    assert states == [{"succeeded": 2}, {"failed": 6}, {"pending": 12}]
    served = fleet.served()
    assert {served[i] for i in w1} == {"2.0.0"}  # the wave that succeeded keeps it
    assert {served[i] for i in w2} == {"1.0.0"}  # the failed wave is rolled back
    assert {served[i] for i in w3} == {"1.0.0"}  # the third wave never saw it
    fleet.sync()  # agents follow: wave 2 runs 1.0.0 again, wave 3 never moved
    assert {fleet.running[i]["app"] for i in w2 | w3} == {digest("1.0.0")}
    assert "rollout.halted" in _kinds(p)
    assert "rollout.halt" in _audits(p)
    # A halted rollout cannot be paused; abort returns wave 1 to 1.0.0 too.
    r = p.call("POST", f"/rollouts/{rid}/pause")
    assert r.status_code == 409, r.text
    assert "it is halted" in r.json()["detail"]
    r = p.call("POST", f"/rollouts/{rid}/abort")
    assert r.status_code == 200, r.text
    assert set(fleet.served().values()) == {"1.0.0"}
    v = p.call("GET", f"/node_module_versions/{bad['id']}", role="read").json()["version"]
    assert v["promotion_state"] == "blessed"


def test_a_failing_init_action_counts_as_a_failed_node(node_platform: NodePlatform) -> None:
    """The version attaches everywhere, but its init action fails on two wave-2 machines:
    ``module.init_failed`` counts like a failed attach, past max_failed=1 the rollout halts."""
    p = node_platform
    fleet = make_fleet(p)
    bad = publish(p, "app", "2.1.0", files=["/etc/app.conf"], digest=digest("2.1.0"))
    rid = _start(p, bad["id"], {**WAVES, "max_failed": 1})
    _, w2, _ = _waves(p, rid)
    failing = set(sorted(w2)[:2])
    fleet.init_broken[digest("2.1.0")] = failing
    doc = _run_until_settled(fleet, rid)
    assert doc["state"] == "halted" and doc["current_wave"] == 2
    assert "wave 2: 2 instance(s) failed" in str(doc["reason"])
    assert doc["waves"][1]["counts"] == {"failed": 2, "rolled_back": 4}
    assert {fleet.served()[i] for i in failing} == {"1.0.0"}  # rolled back


def test_good_version_completes_through_pause_resume_and_a_restart(
    node_platform: NodePlatform, db_url: str, tmp_path: Path
) -> None:
    p = node_platform
    fleet = make_fleet(p)
    good = publish(p, "app", "3.0.0", files=["/etc/app.conf"], digest=digest("3.0.0"))
    rid = _start(p, good["id"], {**WAVES, "max_converging": 3, "soak_seconds": 1})
    w1, w2, _ = _waves(p, rid)
    fleet.sync()  # tick: wave 1 admitted
    assert {i for i, v in fleet.served().items() if v == "3.0.0"} == w1
    # Pause: whatever the agents do, no further instance is served 3.0.0.
    assert p.call("POST", f"/rollouts/{rid}/pause").status_code == 200
    for _ in range(4):
        fleet.sync()
    assert {i for i, v in fleet.served().items() if v == "3.0.0"} == w1
    assert rollout(p, rid)["state"] == "paused"
    # Resume: wave 1 converges and soaks, then wave 2 is admitted at most 3 at a time.
    assert p.call("POST", f"/rollouts/{rid}/resume").status_code == 200
    for _ in range(MAX_ROUNDS):
        fleet.sync()
        on_new = {i for i, v in fleet.served().items() if v == "3.0.0"}
        if on_new - w1:
            break
    assert w1 < on_new <= w1 | w2
    assert len(on_new - w1) <= 3  # the disruption budget
    # Every platform process replaced mid-rollout: the same nodes are served the same.
    before_doc, before = rollout(p, rid), fleet.served()
    restart(p, db_url, tmp_path)
    assert rollout(p, rid) == before_doc
    assert fleet.served() == before
    doc = _run_until_settled(fleet, rid)
    assert doc["state"] == "completed"
    assert set(fleet.served().values()) == {"3.0.0"}
    assert [w["counts"] for w in doc["waves"]] == [{"succeeded": 2}, {"succeeded": 6},
                                                   {"succeeded": 12}]  # fmt: skip
    kinds = _kinds(p)
    assert kinds.count("rollout.wave_completed") == 3
    assert kinds.count("rollout.completed") == 1
    assert {"rollout.start", "rollout.pause", "rollout.resume", "rollout.complete"} <= set(
        _audits(p)
    )
    # Pause of a finished rollout: 409, nothing changes.
    r = p.call("POST", f"/rollouts/{rid}/pause")
    assert r.status_code == 409, r.text
    assert "completed" in r.json()["detail"]
    assert rollout(p, rid)["state"] == "completed"
    p.app.state.platform.engine.dispose()


def test_a_stale_tick_advances_nothing(node_platform: NodePlatform) -> None:
    """Two workers read the same rollout; only the first write lands (compare-and-set)."""
    p = node_platform
    fleet = make_fleet(p, count=4)
    good = publish(p, "app", "3.0.0", files=["/etc/app.conf"], digest=digest("3.0.0"))
    rid = _start(p, good["id"], {"waves": [{"percent": 50}, {"percent": 50}]})
    with Session(p.engine, expire_on_commit=False) as s:
        stale = s.get(Rollout, rid)
        assert stale is not None
        s.commit()
    fleet.tick()  # the other worker admits wave 1 (generation 0 -> 1)
    with Session(p.engine) as s:
        ctx = Ctx(s, Actor("worker-2", None, frozenset()), p.clock())
        assert not cas(ctx, s.merge(stale, load=False), current_wave=1)
        s.commit()
    with Session(p.engine) as s:
        r = s.get(Rollout, rid)
        assert r is not None and r.generation == 1 and r.current_wave == 0
        admitted = s.scalar(
            select(func.count())
            .select_from(FleetEvent)
            .where(FleetEvent.kind == "rollout.admitted")
        )
        assert admitted == 1


def test_assignment_in_waves(node_platform: NodePlatform) -> None:
    """Assigning a module to a template in waves: instances outside a wave do not get it."""
    p = node_platform
    fleet = make_fleet(p, count=6)
    publish(p, "extra", "1.0.0", files=["/etc/extra.conf"], state="live", digest=digest("x"))
    body = {"module_name": "extra", "rollout": {"waves": [{"percent": 50}, {"percent": 50}]}}
    r = p.call("POST", "/node_templates/base/assignments", json=body)
    assert r.status_code == 201, r.text
    (doc,) = p.call("GET", "/rollouts", role="read").json()["rollouts"]
    assert doc["kind"] == "assignment" and doc["previous_version_id"] is None
    w1, w2 = (set(w["instances"]) for w in doc["waves"])

    def having() -> set[str]:
        out = set()
        for c in fleet.nodes:
            names = {m["name"] for m in p.node(c, "GET", "/modules").json()["modules"]}
            if "extra" in names:
                out.add(c.instance_id)
        return out

    assert having() == set()
    fleet.sync()
    assert having() == w1
    for _ in range(MAX_ROUNDS):
        fleet.sync()
        if rollout(p, doc["id"])["state"] == "completed":
            break
    assert rollout(p, doc["id"])["state"] == "completed"
    assert having() == w1 | w2
    assert {fleet.running[i]["extra"] for i in w1 | w2} == {digest("x")}
