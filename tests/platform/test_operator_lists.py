"""Bootstrap tokens and webhook deliveries as the operator lists and acts on them
(``/bootstrap_tokens``, ``/webhook_deliveries``): the service functions the
console's pages use too. Keyset pages, filters, revoke and redeliver, and each
bad input refused with nothing changed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, get_args

from sqlalchemy import update

from powernode.platform.api.ingest import DeliveryStatus
from powernode.platform.db.ingest import ModuleIngest
from powernode.platform.services import deliveries as deliveries_service
from powernode.platform.services import paging
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem
from tests.platform.test_drift import instance
from tests.platform.test_webhooks import create_module, deliver


def tokens(p: Platform, role: str = "read", **params: Any) -> dict[str, Any]:
    r = p.call("GET", "/bootstrap_tokens", role=role, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def make_token(p: Platform, iid: str, ttl: int = 3600) -> str:
    r = p.call("POST", f"/node_instances/{iid}/bootstrap_tokens", json={"ttl_seconds": ttl})
    assert r.status_code == 201, r.text
    token_id: str = r.json()["token_id"]
    return token_id


def test_bootstrap_tokens_list_newest_first_in_keyset_pages(platform: Platform) -> None:
    iid = instance(platform, "web-1")
    made = [make_token(platform, iid) for _ in range(5)]
    first = tokens(platform, limit=2)
    assert [t["id"] for t in first["bootstrap_tokens"]] == made[::-1][:2]
    assert "token" not in first["bootstrap_tokens"][0]  # never the secret
    seen = [t["id"] for t in first["bootstrap_tokens"]]
    nxt = first["next"]
    while nxt:
        page = tokens(platform, limit=2, after=nxt)
        seen += [t["id"] for t in page["bootstrap_tokens"]]
        nxt = page["next"]
    assert seen == made[::-1]
    assert {t["state"] for t in tokens(platform)["bootstrap_tokens"]} == {"live"}
    assert tokens(platform, instance="web-1")["bootstrap_tokens"]
    assert tokens(platform, instance="web-2")["bootstrap_tokens"] == []


def test_revoking_a_token_ends_it_and_is_audited(platform: Platform) -> None:
    iid = instance(platform, "web-1")
    tid = make_token(platform, iid)
    r = platform.call("POST", f"/bootstrap_tokens/{tid}/revoke")
    assert r.status_code == 200, r.text
    assert r.json()["bootstrap_token"]["state"] == "expired"
    assert [t["id"] for t in tokens(platform, status="expired")["bootstrap_tokens"]] == [tid]
    assert tokens(platform, status="live")["bootstrap_tokens"] == []
    audit = platform.call("GET", "/audit_log", params={"action": "instance.bootstrap_token.revoke"})
    entries = audit.json()["audit_log"]
    assert len(entries) == 1 and entries[0]["actor"] == "admin"
    # Again: refused, nothing changes.
    before = platform.snapshot()
    assert_problem(platform.call("POST", f"/bootstrap_tokens/{tid}/revoke"), 409, "expired")
    assert platform.snapshot() == before


def test_bad_token_requests_change_nothing(platform: Platform) -> None:
    iid = instance(platform, "web-1")
    tid = make_token(platform, iid)
    before = platform.snapshot()
    assert_problem(platform.call("POST", f"/bootstrap_tokens/{tid}/revoke", role="read"), 403)
    assert_problem(platform.call("POST", "/bootstrap_tokens/nope/revoke"), 404, "not found")
    r = platform.call("GET", "/bootstrap_tokens", params={"status": "dead"})
    assert_problem(r, 422)
    r = platform.call("GET", "/bootstrap_tokens", params={"after": "yesterday|x"})
    assert_problem(r, 422)
    assert platform.snapshot() == before


def deliveries(p: Platform, **params: Any) -> dict[str, Any]:
    r = p.call("GET", "/webhook_deliveries", role="read", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_deliveries_list_with_their_ingest_status(platform: Platform) -> None:
    secret = create_module(platform)
    deliver(platform, {"module": "my-redis", "ref": "refs/tags/v1.0.0"}, secret, delivery="a")
    deliver(platform, {"module": "my-redis", "tag": "v1.1.0"}, secret, delivery="b")
    deliver(platform, {"module": "my-redis", "ref": "refs/heads/main"}, secret, delivery="c")
    rows = deliveries(platform)["deliveries"]
    got = [(d["delivery_id"], d["tag"], d["status"], d["attempts"]) for d in rows]
    assert got == [("c", None, "ignored", 0), ("b", "v1.1.0", "queued", 0),
                   ("a", "v1.0.0", "queued", 0)]  # fmt: skip
    assert [d["delivery_id"] for d in deliveries(platform, status="ignored")["deliveries"]] == ["c"]
    page = deliveries(platform, limit=2)
    assert len(page["deliveries"]) == 2 and page["next"]
    rest = deliveries(platform, limit=2, after=page["next"])
    assert [d["delivery_id"] for d in rest["deliveries"]] == ["a"] and rest["next"] is None
    assert deliveries(platform, module="other")["deliveries"] == []


def test_redeliver_retries_a_rejected_tag_and_refuses_a_branch(platform: Platform) -> None:
    secret = create_module(platform)
    deliver(platform, {"module": "my-redis", "tag": "v1.0.0"}, secret, delivery="a")
    deliver(platform, {"module": "my-redis", "ref": "refs/heads/main"}, secret, delivery="c")
    with platform.engine.begin() as c:
        c.execute(update(ModuleIngest).values(state="rejected", reason="bad signature", attempts=1))
    rows = {d["delivery_id"]: d for d in deliveries(platform)["deliveries"]}
    assert (rows["a"]["status"], rows["a"]["reason"]) == ("rejected", "bad signature")
    before = platform.snapshot()
    assert_problem(
        platform.call("POST", f"/webhook_deliveries/{rows['a']['id']}/redeliver", role="read"), 403
    )
    assert_problem(
        platform.call("POST", f"/webhook_deliveries/{rows['c']['id']}/redeliver"), 409, "not a tag"
    )
    assert platform.snapshot() == before
    r = platform.call("POST", f"/webhook_deliveries/{rows['a']['id']}/redeliver")
    assert r.status_code == 202, r.text
    assert (r.json()["delivery"]["status"], r.json()["delivery"]["attempts"]) == ("queued", 0)
    audit = platform.call("GET", "/audit_log", params={"action": "module_ingest.queue"})
    assert audit.json()["audit_log"][0]["actor"] == "admin"


def test_the_schema_states_exactly_the_statuses_and_cursors_the_services_take() -> None:
    assert set(get_args(DeliveryStatus)) - {""} == set(deliveries_service.STATUSES)
    t = datetime(2026, 12, 7, 17, 0, 0, 123456, tzinfo=UTC)
    c = paging.cursor(t, "0f0e-1")
    assert re.fullmatch(paging.PATTERN, c)
    assert paging.parse_cursor(c) == (t, "0f0e-1")
