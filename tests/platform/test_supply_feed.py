"""Issue 18: the OSV feed, re-matched when it changes, with events for live versions.

A record added to the feed for a package of a live version produces the
fleet event and changes the verdict, without a rebuild; the same feed again
changes nothing; a fixed version in an update removes the finding; a bad
feed is refused whole. Feeds are fetched from an URL on loopback.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from powernode.platform.db import FleetEvent, NodeInstance
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem
from tests.platform.test_drift import instance
from tests.platform.test_supply_policy import KEY, attach, move, set_policy, staged_version
from tests.supply import fixtures as fx

POLICY_LIVE: dict[str, Any] = {
    "live": {"sbom": {}, "vulnerabilities": {"block": ["critical"]}},
}


def events(p: Platform) -> list[FleetEvent]:
    with Session(p.engine) as s:
        q = select(FleetEvent).where(FleetEvent.kind == "module_version.vulnerability")
        return list(s.scalars(q.order_by(FleetEvent.occurred_at, FleetEvent.id)))


def live_version(p: Platform, fixed_now: Any) -> str:
    vid = staged_version(p, fixed_now)
    set_policy(p, POLICY_LIVE)
    attach(p, vid, kind="sbom", document=fx.sbom())
    attach(p, vid, kind="provenance", envelope=fx.provenance_envelope(KEY))
    for to in ("blessed", "live"):
        r = move(p, vid, to)
        assert r.status_code == 200, r.text
    return vid


def feed(p: Platform, records: list[dict[str, Any]]) -> dict[str, Any]:
    r = p.call("POST", "/vulnerability_feeds", json={"records": records, "source": "test"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()["import"]
    return out


def test_new_finding_for_a_live_version_raises_an_event_and_flips_the_verdict(
    platform: Platform, fixed_now: Any
) -> None:
    vid = live_version(platform, fixed_now)
    before = platform.call("GET", f"/node_module_versions/{vid}/evidence").json()
    assert before["verdicts"]["live"]["allowed"] is True and before["findings"] == []
    harmless = fx.osv_record("DEBIAN-CVE-2026-2000", "curl", "8.0", severity="CRITICAL")
    assert feed(platform, [harmless])["versions_rematched"] == 0
    assert events(platform) == []

    bad = fx.osv_record(
        "DEBIAN-CVE-2026-2001", "redis", "5:7.0.15-1~deb12u2", cvss=fx.CRITICAL_CVSS
    )
    out = feed(platform, [harmless, bad])
    assert (out["changed"], out["unchanged"], out["versions_rematched"]) == (1, 1, 1)
    assert out["findings_added"] == 1 and out["events"] == 1
    [ev] = events(platform)
    assert ev.severity == "critical"
    assert ev.payload["message"] == (
        "live version my-redis 0.1.0 now has a critical finding: DEBIAN-CVE-2026-2001 in "
        "redis-server 5:7.0.15-1~deb12u1"
    )
    assert ev.payload["policy_allows_live"] is False
    after = platform.call("GET", f"/node_module_versions/{vid}/evidence").json()
    assert after["promotion_state"] == "live"  # nothing rebuilt or moved
    assert after["verdicts"]["live"]["allowed"] is False
    vuln = next(r for r in after["verdicts"]["live"]["rules"] if r["rule"] == "vulnerabilities")
    assert "DEBIAN-CVE-2026-2001 (critical, redis-server" in vuln["reason"]

    # The same feed again: nothing changes, no second event.
    out = feed(platform, [harmless, bad])
    assert (out["changed"], out["events"]) == (0, 0)
    assert len(events(platform)) == 1

    # The record updated: fixed in the installed version -> the finding goes away.
    fixed = fx.osv_record(
        "DEBIAN-CVE-2026-2001",
        "redis",
        "5:7.0.15-1~deb12u1",
        cvss=fx.CRITICAL_CVSS,
        modified="2026-12-05T00:00:00Z",
    )
    out = feed(platform, [fixed])
    assert (out["changed"], out["findings_removed"]) == (1, 1)
    again = platform.call("GET", f"/node_module_versions/{vid}/evidence").json()
    assert again["findings"] == [] and again["verdicts"]["live"]["allowed"] is True


def test_new_finding_for_a_version_a_node_runs_raises_an_event(
    platform: Platform, fixed_now: Any
) -> None:
    """Not live (staging), but a node's heartbeat says it runs it: the event all the same."""
    vid = staged_version(platform, fixed_now)
    set_policy(platform, POLICY_LIVE)
    attach(platform, vid, kind="sbom", document=fx.sbom())
    first = fx.osv_record("DEBIAN-CVE-2026-2101", "redis", "5:7.0.15-1~deb12u2", severity="HIGH")
    out = feed(platform, [first])
    assert (out["findings_added"], out["events"]) == (1, 0)  # runs nowhere, not live
    assert events(platform) == []

    iid = instance(platform, "redis-vuln-1")
    other = instance(platform, "redis-vuln-2")
    running = "sha256:" + "cd" * 32  # the composefs digest staged_version records
    with platform.engine.begin() as c:
        c.execute(
            update(NodeInstance)
            .where(NodeInstance.id == iid)
            .values(running_module_digests={"my-redis": running})
        )
        c.execute(
            update(NodeInstance)
            .where(NodeInstance.id == other)
            .values(running_module_digests={"my-redis": "sha256:" + "00" * 32})
        )
    second = fx.osv_record(
        "DEBIAN-CVE-2026-2102", "redis", "5:7.0.15-1~deb12u2", cvss=fx.CRITICAL_CVSS
    )
    out = feed(platform, [first, second])
    assert (out["findings_added"], out["events"]) == (1, 1)
    [ev] = events(platform)
    assert ev.severity == "critical"
    assert ev.payload["message"] == (
        "version my-redis 0.1.0 (running on 1 node(s)) now has a critical finding: "
        "DEBIAN-CVE-2026-2102 in redis-server 5:7.0.15-1~deb12u1"
    )
    assert ev.payload["running_instances"] == [iid]
    assert ev.payload["promotion_state"] == "staging"
    assert ev.payload["policy_allows_live"] is False


def test_withdrawn_record_affects_nothing(platform: Platform, fixed_now: Any) -> None:
    vid = live_version(platform, fixed_now)
    rec = fx.osv_record("DEBIAN-CVE-2026-2100", "openssl", None, severity="CRITICAL")
    feed(platform, [rec])
    assert (
        len(platform.call("GET", f"/node_module_versions/{vid}/evidence").json()["findings"]) == 2
    )
    withdrawn = {**rec, "withdrawn": "2026-12-06T00:00:00Z", "modified": "2026-12-06T00:00:00Z"}
    out = feed(platform, [withdrawn])
    assert out["findings_removed"] == 2


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        ([{"id": "X-1"}], "records.1.modified: Field required"),
        ([{"modified": "2026-01-01T00:00:00Z"}], "records.1.id: Field required"),
        (
            [{"id": "X-2", "modified": "t", "affected": [{"ranges": []}]}],
            "records.1.affected.0.package: Field required",
        ),
    ],
)
def test_bad_feed_is_refused_whole(
    platform: Platform, fixed_now: Any, records: list[dict[str, Any]], fragment: str
) -> None:
    live_version(platform, fixed_now)
    good = fx.osv_record("DEBIAN-CVE-2026-2200", "openssl", None, severity="CRITICAL")
    before = platform.snapshot()
    r = platform.call("POST", "/vulnerability_feeds", json={"records": [good, *records]})
    assert_problem(r, 422, fragment)
    assert platform.snapshot() == before


@pytest.fixture
def feed_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 serving the bytes put in its dict by path."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = files.get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_feed_from_an_url_as_osv_dev_zip(
    platform: Platform, fixed_now: Any, feed_server: tuple[str, dict[str, bytes]]
) -> None:
    base, files = feed_server
    vid = live_version(platform, fixed_now)
    url = base + "/Debian/all.zip"
    r = platform.call("POST", "/vulnerability_feeds", json={"url": url})
    assert_problem(r, 403, "is not under a feed source", "vulnerability_feed_urls")
    state = platform.app.state.platform
    state.settings = state.settings.model_copy(update={"vulnerability_feed_urls": (base + "/",)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for rec in (
            fx.osv_record(
                "DEBIAN-CVE-2026-3000", "zlib", "1:1.2.13.dfsg-1+deb12u1", severity="HIGH"
            ),
            fx.osv_record("DEBIAN-CVE-2026-3001", "zlib", "1:1.2.12", severity="CRITICAL"),
        ):
            z.writestr(f"{rec['id']}.json", json.dumps(rec))
    files["/Debian/all.zip"] = buf.getvalue()
    r = platform.call("POST", "/vulnerability_feeds", json={"url": url})
    assert r.status_code == 200, r.text
    assert r.json()["import"]["records"] == 2
    got = platform.call("GET", f"/node_module_versions/{vid}/evidence").json()
    # Epoch-aware: 1:1.2.13.dfsg-1 < 1:1.2.13.dfsg-1+deb12u1, and > 1:1.2.12.
    assert [(f["osv_id"], f["severity"]) for f in got["findings"]] == [
        ("DEBIAN-CVE-2026-3000", "high")
    ]
    before = platform.snapshot()
    r = platform.call("POST", "/vulnerability_feeds", json={"url": base + "/missing.json"})
    assert_problem(r, 422, "answered 404")
    r = platform.call("POST", "/vulnerability_feeds", json={"url": "file:///etc/passwd"})
    assert_problem(r, 422, "body.FeedUrlIn.url")
    assert platform.snapshot() == before
