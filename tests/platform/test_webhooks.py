"""Build-completion webhooks (seed 004): HMAC, replay guard, timestamp window, tag → ingest."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.platform.services.webhooks import check_signature, sign
from tests.platform.conftest import API, Platform
from tests.platform.problems import assert_problem

SECRET_KEY = "webhook_secret"


def create_module(p: Platform, name: str = "my-redis", **kw: Any) -> str:
    body = {"name": name, "category_slug": "userland", **kw}
    r = p.call("POST", "/node_modules", json=body)
    assert r.status_code == 201, r.text
    secret: str = r.json()["module"][SECRET_KEY]
    return secret


def deliver(
    p: Platform,
    payload: dict[str, Any] | bytes,
    secret: str,
    *,
    provider: str = "gitea",
    delivery: str | None = "d-1",
    signature: str | None = None,
) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    mac = sign(body, secret)
    headers = {"Content-Type": "application/json"}
    if provider == "gitea":
        headers["X-Gitea-Signature"] = signature if signature is not None else mac
        if delivery is not None:
            headers["X-Gitea-Delivery"] = delivery
        headers["X-Gitea-Event"] = "push"
    else:
        headers["X-Hub-Signature-256"] = signature if signature is not None else f"sha256={mac}"
        if delivery is not None:
            headers["X-GitHub-Delivery"] = delivery
        headers["X-GitHub-Event"] = "push"
    return p.raw("POST", f"{API}/webhooks/{provider}/module", content=body, headers=headers)


def ingests(p: Platform, module: str = "my-redis") -> list[dict[str, Any]]:
    r = p.call("GET", f"/node_modules/{module}/ingests", role="read")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["ingests"]
    return rows


def test_gitea_tag_push_queues_an_ingest(platform: Platform) -> None:
    secret = create_module(platform, gitea_repo_full_name="acme/modules/my-redis-module")
    payload = {
        "ref": "refs/tags/v0.1.0",
        "repository": {"full_name": "acme/modules/my-redis-module"},
    }
    r = deliver(platform, payload, secret)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["module_name"], body["delivery_id"], body["ignored"]) == ("my-redis", "d-1", None)
    assert (body["ingest"]["tag"], body["ingest"]["state"]) == ("v0.1.0", "queued")
    assert body["ingest"]["source"] == "webhook:gitea"
    assert [(j["tag"], j["state"]) for j in ingests(platform)] == [("v0.1.0", "queued")]
    assert platform.count("webhook_deliveries") == 1
    audit = platform.call("GET", "/audit_log?action=module_ingest.queue").json()["audit_log"]
    assert audit[0]["actor"] == "webhook:gitea"


def test_github_release_by_module_name(platform: Platform) -> None:
    secret = create_module(platform)
    payload = {"module": "my-redis", "release": {"tag_name": "1.2.0"}}
    r = deliver(platform, payload, secret, provider="github", delivery="gh-7")
    assert r.status_code == 202, r.text
    assert r.json()["ingest"]["tag"] == "1.2.0"


def test_branch_push_is_acknowledged_and_ignored(platform: Platform) -> None:
    secret = create_module(platform)
    r = deliver(platform, {"module": "my-redis", "ref": "refs/heads/main"}, secret)
    assert r.status_code == 202, r.text
    assert r.json()["ingest"] is None
    assert "refs/heads/main is not a tag" in r.json()["ignored"]
    assert platform.count("module_ingests") == 0


def test_a_fresh_timestamp_is_accepted(platform: Platform, fixed_now: datetime) -> None:
    secret = create_module(platform)
    ts = (fixed_now + timedelta(seconds=30)).isoformat()
    r = deliver(platform, {"module": "my-redis", "tag": "v1.0.0", "timestamp": ts}, secret)
    assert r.status_code == 202, r.text


def test_a_second_delivery_of_a_queued_tag_changes_no_ingest(platform: Platform) -> None:
    secret = create_module(platform)
    assert deliver(platform, {"module": "my-redis", "tag": "v1.0.0"}, secret).status_code == 202
    # Another signed body naming the same tag while it is queued: one ingest still.
    again = {"module": "my-redis", "tag": "v1.0.0", "run": 2}
    r = deliver(platform, again, secret, delivery="d-2")
    assert r.status_code == 202
    assert len(ingests(platform)) == 1


def _bad_cases(fixed_now: datetime) -> list[Any]:
    ok = {"module": "my-redis", "tag": "v1.0.0"}
    stale = (fixed_now - timedelta(minutes=10)).isoformat()
    return [
        pytest.param(ok, {"signature": "0" * 64}, 401, "signature does not match", id="forged"),
        pytest.param(ok, {"signature": "xyz"}, 401, "not 64 hex digits", id="garbled-signature"),
        pytest.param(ok, {"signature": ""}, 401, "not 64 hex digits", id="empty-signature"),
        pytest.param(ok, {"wrong_secret": True}, 401, "signature does not match", id="other-key"),
        pytest.param(ok, {"delivery": None}, 422, "X-Gitea-Delivery", id="no-delivery-id"),
        pytest.param(ok, {"delivery": "a b"}, 422, "malformed", id="bad-delivery-id"),
        pytest.param(
            {**ok, "timestamp": stale}, {}, 401, "more than 300 s from", id="stale-timestamp"
        ),
        pytest.param({**ok, "timestamp": "yesterday"}, {}, 422, "RFC 3339", id="bad-timestamp"),
        pytest.param(
            {"module": "nope", "tag": "v1.0.0"}, {}, 401, "signature does not match", id="unknown"
        ),
        pytest.param(
            {"repository": {"full_name": "x/y"}, "tag": "v1"},
            {},
            401,
            "names no module registered here",
            id="unknown-repo",
        ),
        pytest.param({"tag": "v1.0.0"}, {}, 422, "names no module", id="no-module"),
        pytest.param({"module": "my-redis"}, {}, 422, "names no tag", id="no-tag"),
        pytest.param(
            {"module": "my-redis", "tag": "latest"}, {}, 422, "not a SemVer", id="not-semver"
        ),
        pytest.param({"module": 5, "tag": "v1"}, {}, 422, "module must be a string", id="types"),
        pytest.param(b"not json", {}, 422, "not JSON", id="not-json"),
        pytest.param(b"[1, 2]", {}, 422, "JSON object", id="not-object"),
        pytest.param(b"x" * (256 * 1024 + 1), {}, 413, "limit is 262144", id="oversized"),
    ]


@pytest.mark.parametrize("case", range(17), ids=[p.id for p in _bad_cases(datetime.now())])
def test_bad_deliveries_change_nothing(platform: Platform, fixed_now: datetime, case: int) -> None:
    payload, opts, status, fragment = _bad_cases(fixed_now)[case].values
    secret = create_module(platform)
    if opts.pop("wrong_secret", False):
        secret = "not-the-secret"
    before = platform.snapshot()
    r = deliver(platform, payload, secret, **opts)
    assert_problem(r, status, fragment)
    assert platform.snapshot() == before


def test_replayed_delivery_is_refused(platform: Platform) -> None:
    secret = create_module(platform)
    payload = {"module": "my-redis", "tag": "v1.0.0"}
    assert deliver(platform, payload, secret, delivery="same").status_code == 202
    before = platform.snapshot()
    r = deliver(platform, payload, secret, delivery="same")
    body = assert_problem(r, 409, "received already", "gitea delivery same")
    assert body["type"].endswith("/webhook-replayed")
    assert platform.snapshot() == before


def test_github_signature_needs_the_sha256_prefix(platform: Platform) -> None:
    secret = create_module(platform)
    body = json.dumps({"module": "my-redis", "tag": "v1.0.0"}).encode()
    before = platform.snapshot()
    r = deliver(platform, body, secret, provider="github", signature=sign(body, secret))
    assert_problem(r, 401, "must be 'sha256=<hex>'")
    assert platform.snapshot() == before


def test_one_repository_two_accounts_picks_the_signer(platform: Platform) -> None:
    # Same repo name registered twice is allowed across accounts; here two modules share
    # a repo in one account (e.g. a monorepo): the HMAC decides which one is meant.
    s1 = create_module(platform, "one", gitea_repo_full_name="acme/mono")
    s2 = create_module(platform, "two", gitea_repo_full_name="acme/mono")
    payload = {"repository": {"full_name": "acme/mono"}, "tag": "v1.0.0"}
    assert deliver(platform, payload, s2, delivery="a").json()["module_name"] == "two"
    assert deliver(platform, payload, s1, delivery="b").json()["module_name"] == "one"


@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=64))
def test_signature_round_trip_and_any_flipped_bit_fails(body: bytes, secret: str) -> None:
    mac = bytes.fromhex(sign(body, secret))
    assert check_signature(body, secret, mac)
    flipped = bytes([mac[0] ^ 1]) + mac[1:]
    assert not check_signature(body, secret, flipped)
    assert not check_signature(body + b"x", secret, mac)
