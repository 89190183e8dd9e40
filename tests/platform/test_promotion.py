"""Promotion: the pure transition table, then the API with scopes and approvals."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from powernode.platform.db import PromotionState
from powernode.platform.problems import TransitionError
from powernode.platform.services.promotion import LEGAL, check_transition, previous_state
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem

S = PromotionState
EXPECTED_LEGAL = {
    (S.BUILT, S.STAGING), (S.STAGING, S.BLESSED), (S.BLESSED, S.LIVE),  # promote
    (S.LIVE, S.BLESSED), (S.BLESSED, S.STAGING), (S.STAGING, S.BUILT),  # demote
    (S.BUILT, S.RETIRED), (S.STAGING, S.RETIRED), (S.BLESSED, S.RETIRED),
    (S.LIVE, S.RETIRED),  # retire
}  # fmt: skip
ALL_PAIRS = list(itertools.product(PromotionState, PromotionState))


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_transition_table(current: PromotionState, target: PromotionState) -> None:
    if (current, target) in EXPECTED_LEGAL:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(TransitionError) as e:
            check_transition(current, target)
        assert f"from {current.value} to {target.value}" in str(e.value)
        assert e.value.extra["legal_targets"] == sorted(s.value for s in LEGAL[current])


def test_previous_state() -> None:
    assert previous_state(S.LIVE) is S.BLESSED
    assert previous_state(S.STAGING) is S.BUILT
    for s in (S.BUILT, S.RETIRED):
        with pytest.raises(TransitionError):
            previous_state(s)


def version(p: Platform, *, require_approval: bool = False, v: str = "0.1.0") -> str:
    if p.call("GET", "/node_modules/my-redis").status_code == 404:
        body = {"name": "my-redis", "category_slug": "userland"}
        r = p.call("POST", "/node_modules", json={**body, "require_approval": require_approval})
        assert r.status_code == 201, r.text
    r = p.call("POST", "/node_modules/my-redis/versions", json={"version_string": v})
    assert r.status_code == 201, r.text
    vid: str = r.json()["version"]["id"]
    return vid


def move(p: Platform, vid: str, to: str, role: str = "admin") -> Any:
    return p.call("POST", f"/node_module_versions/{vid}/promote", role=role, json={"to": to})


def test_promote_through_the_lifecycle_then_demote_and_retire(platform: Platform) -> None:
    vid = version(platform)
    for to in ("staging", "blessed", "live"):
        r = move(platform, vid, to)
        assert r.status_code == 200, r.text
        assert r.json()["version"]["promotion_state"] == to
    r = platform.call("POST", f"/node_module_versions/{vid}/demote", json={})
    assert r.json()["version"]["promotion_state"] == "blessed"
    r = platform.call("POST", f"/node_module_versions/{vid}/retire", json={})
    assert r.json()["version"]["promotion_state"] == "retired"
    got = platform.call("GET", f"/node_module_versions/{vid}", role="read").json()["version"]
    assert got["promotion_state"] == "retired"
    moves = platform.call("GET", "/audit_log?action=module_version.promote").json()["audit_log"]
    assert [(m["detail"]["from"], m["detail"]["to"]) for m in reversed(moves)] == [
        ("built", "staging"),
        ("staging", "blessed"),
        ("blessed", "live"),
        ("live", "blessed"),
        ("blessed", "retired"),
    ]


@pytest.mark.parametrize(
    ("path", "to", "says"),
    [
        ("built", "live", "one step at a time"),
        ("built", "blessed", "one step at a time"),
        ("staging", "staging", "already staging"),
        ("retired", "staging", "retired is final"),
    ],
)
def test_illegal_promotion_is_409_and_changes_nothing(
    platform: Platform, path: str, to: str, says: str
) -> None:
    vid = version(platform)
    if path != "built":
        for step in {"staging": ["staging"], "retired": ["retired"]}[path]:
            assert move(platform, vid, step).status_code == 200
    before = platform.snapshot()
    body = assert_problem(move(platform, vid, to), 409, says)
    assert body["current_state"] == path
    assert platform.snapshot() == before


def test_unknown_state_and_unknown_version(platform: Platform) -> None:
    vid = version(platform)
    before = platform.snapshot()
    assert_problem(move(platform, vid, "golden"), 422, "body.to", "'built', 'staging'")
    assert_problem(move(platform, "no-such-id", "staging"), 404, "'no-such-id' not found")
    assert_problem(
        platform.call("POST", f"/node_module_versions/{vid}/demote", json={}), 409, "demote"
    )
    assert platform.snapshot() == before


def to_blessed(p: Platform, vid: str) -> None:
    for to in ("staging", "blessed"):
        assert move(p, vid, to).status_code == 200


def test_write_token_cannot_promote_to_live(platform: Platform) -> None:
    vid = version(platform)
    to_blessed(platform, vid)
    before = platform.snapshot()
    body = assert_problem(move(platform, vid, "live", role="write"), 403, "'promote-live' scope")
    assert body["required_scope"] == "promote-live"
    assert platform.snapshot() == before
    assert move(platform, vid, "live", role="admin").status_code == 200


def test_read_token_cannot_promote_at_all(platform: Platform) -> None:
    vid = version(platform)
    before = platform.snapshot()
    assert_problem(move(platform, vid, "staging", role="read"), 403, "'write' scope")
    assert platform.snapshot() == before


def test_require_approval_needs_an_approval_from_another_token(platform: Platform) -> None:
    vid = version(platform, require_approval=True)
    to_blessed(platform, vid)
    before = platform.snapshot()
    assert_problem(
        move(platform, vid, "live"), 403, "requires approval", f"approve-module-version {vid}"
    )
    assert platform.snapshot() == before
    # The promoter's own approval does not count (four eyes).
    r = platform.call("POST", f"/node_module_versions/{vid}/approvals", json={"note": "mine"})
    assert r.status_code == 201
    assert_problem(move(platform, vid, "live"), 403, "requires approval")
    r = platform.call(
        "POST", f"/node_module_versions/{vid}/approvals", role="approver", json={"note": "ok"}
    )
    assert r.status_code == 201
    approval_id = r.json()["approval"]["id"]
    r = move(platform, vid, "live")
    assert r.status_code == 200, r.text
    assert r.json()["version"]["promotion_state"] == "live"
    entry = platform.call("GET", "/audit_log?action=module_version.promote&limit=1")
    assert entry.json()["audit_log"][0]["detail"]["approval_id"] == approval_id
    # Used once: after a rollback, going live again needs a fresh approval.
    assert platform.call("POST", f"/node_module_versions/{vid}/demote", json={}).status_code == 200
    assert_problem(move(platform, vid, "live"), 403, "requires approval")


def test_approving_needs_promote_live_and_a_version_that_can_go_live(platform: Platform) -> None:
    vid = version(platform)
    before = platform.snapshot()
    r = platform.call("POST", f"/node_module_versions/{vid}/approvals", role="write", json={})
    assert_problem(r, 403, "'promote-live' scope")
    assert platform.snapshot() == before
    assert move(platform, vid, "retired").status_code == 200
    before = platform.snapshot()
    r = platform.call("POST", f"/node_module_versions/{vid}/approvals", role="approver", json={})
    assert_problem(r, 409, "is retired")
    assert platform.snapshot() == before
