"""Issue 13 item 6: a replayed webhook body changes nothing whatever its delivery id, two
identical deliveries at once make one ingest, and unknown modules answer like known ones."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import anyio
import pytest
from httpx import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.platform.db import ModuleIngest
from powernode.platform.services import ingest
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.webhooks import sign
from tests.platform.conftest import API, Platform
from tests.platform.problems import assert_problem
from tests.platform.test_webhooks import create_module, deliver, ingests

ROUNDS = 30
AT_ONCE = 4


def test_same_body_under_new_delivery_ids_is_one_delivery(platform: Platform) -> None:
    # The attack pass: one signed body, 20 fresh delivery ids → 20 rows. Now one.
    secret = create_module(platform)
    payload = {"module": "my-redis", "tag": "v1.0.0"}
    assert deliver(platform, payload, secret, delivery="first").status_code == 202
    before = platform.snapshot()
    for i in range(20):
        r = deliver(platform, payload, secret, delivery=f"replay-{i}")
        body = assert_problem(r, 409, "this signed body was received already", "delivery first")
        assert body["type"].endswith("/webhook-replayed")
    assert platform.snapshot() == before
    assert platform.count("webhook_deliveries") == 1


def test_same_body_on_the_other_providers_endpoint_is_a_replay(platform: Platform) -> None:
    # The HMAC is the same on both endpoints (only the header's form differs).
    secret = create_module(platform)
    body = json.dumps({"module": "my-redis", "tag": "v1.0.0"}).encode()
    assert deliver(platform, body, secret, provider="gitea", delivery="g").status_code == 202
    before = platform.snapshot()
    r = deliver(platform, body, secret, provider="github", delivery="h")
    assert_problem(r, 409, "gitea delivery g")
    assert platform.snapshot() == before


def _reject(platform: Platform, now: datetime) -> None:
    with Session(platform.engine) as s:
        job = s.scalars(select(ModuleIngest)).one()
        ctx = Ctx(s, Actor("test-worker", None, frozenset()), now)
        ingest.record_rejected(ctx, job, "signature does not verify")
        s.commit()


def test_replayed_body_of_a_rejected_ingest_does_not_queue_it_again(
    platform: Platform, fixed_now: datetime
) -> None:
    secret = create_module(platform)
    payload = {"module": "my-redis", "tag": "v1.0.0"}
    assert deliver(platform, payload, secret, delivery="d-1").status_code == 202
    _reject(platform, fixed_now)
    before = platform.snapshot()
    r = deliver(platform, payload, secret, delivery="d-2")
    assert_problem(r, 409, "this signed body was received already")
    assert platform.snapshot() == before
    assert [(j["tag"], j["state"]) for j in ingests(platform)] == [("v1.0.0", "rejected")]


def test_a_new_signed_body_still_retries_a_rejected_tag(
    platform: Platform, fixed_now: datetime
) -> None:
    # Only the holder of the secret can make a new body (a CI re-run): that is a retry.
    secret = create_module(platform)
    assert deliver(platform, {"module": "my-redis", "tag": "v1.0.0"}, secret).status_code == 202
    _reject(platform, fixed_now)
    again = {"module": "my-redis", "tag": "v1.0.0", "run": 2}
    r = deliver(platform, again, secret, delivery="d-2")
    assert r.status_code == 202, r.text
    assert r.json()["ingest"]["state"] == "queued"


def _alike(r: Response) -> tuple[int, str, dict[str, Any]]:
    return r.status_code, r.headers["content-type"], r.json()


@pytest.mark.parametrize(
    "signature",
    [None, "0" * 64, "not-hex"],
    ids=["right-key-of-another", "forged", "garbled"],
)
@pytest.mark.parametrize(
    "names",
    [
        ({"module": "my-redis"}, {"module": "nope"}),
        (
            {"repository": {"full_name": "acme/my-redis"}},
            {"repository": {"full_name": "acme/nope"}},
        ),
    ],
    ids=["by-name", "by-repository"],
)
def test_unknown_and_known_modules_are_answered_alike(
    platform: Platform, signature: str | None, names: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    create_module(platform, gitea_repo_full_name="acme/my-redis")
    known, unknown = ({**n, "tag": "v1.0.0"} for n in names)
    before = platform.snapshot()
    a = deliver(platform, known, "not-the-secret", signature=signature)
    b = deliver(platform, unknown, "not-the-secret", signature=signature)
    assert a.status_code == 401, a.text
    assert _alike(a) == _alike(b)
    assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
    assert platform.snapshot() == before


def _burst(platform: Platform, body: bytes, secret: str, n: int, round_: int) -> list[Response]:
    """``n`` deliveries of one body, each with its own delivery id, sent at once."""
    out: list[Response | None] = [None] * n

    async def go() -> None:
        async def one(i: int) -> None:
            headers = {
                "Content-Type": "application/json",
                "X-Gitea-Signature": sign(body, secret),
                "X-Gitea-Delivery": f"r{round_}-{i}",
            }
            out[i] = await platform.client.post(
                f"{API}/webhooks/gitea/module", content=body, headers=headers
            )

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)

    platform.portal.call(go)
    return [r for r in out if r is not None]


def test_concurrent_identical_deliveries_make_one_ingest(platform: Platform) -> None:
    # ROUNDS rounds of AT_ONCE identical bodies at once: one 202, the rest replays, one
    # delivery row, one ingest and one audit row per round; never a 5xx or a lost round.
    secret = create_module(platform)
    for n in range(ROUNDS):
        body = json.dumps({"module": "my-redis", "tag": f"v1.0.{n}"}).encode()
        got = _burst(platform, body, secret, AT_ONCE, n)
        codes = sorted(r.status_code for r in got)
        assert codes == [202] + [409] * (AT_ONCE - 1), [r.text for r in got]
    assert platform.count("webhook_deliveries") == ROUNDS
    assert sorted(j["tag"] for j in ingests(platform)) == sorted(f"v1.0.{n}" for n in range(ROUNDS))
    audit = platform.call("GET", "/audit_log?action=module_ingest.queue&limit=500").json()
    assert len(audit["audit_log"]) == ROUNDS
