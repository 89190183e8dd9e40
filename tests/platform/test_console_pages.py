"""The console's pages over HTTP, without a browser: read-only transactions, the
headers every page carries, the one-time secret, and POSTs refused without CSRF.

(The browser tests, tests/platform/test_console_browser.py, click through them.)
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from powernode.platform.db.session import writer
from powernode.platform.services.providers import RecordingProvider
from tests.platform.conftest import Platform
from tests.platform.test_drift import instance
from tests.platform.test_preview import publish

PAGES = [
    "/app/system/modules",
    "/app/system/modules/nginx",
    "/app/system/versions",
    "/app/system/templates",
    "/app/system/templates/base",
    "/app/system/nodes",
    "/app/system/instances",
    "/app/system/bootstrap-tokens",
    "/app/system/deliveries",
    "/app/system/events",
    "/app/system/audit",
]


def login(p: Platform, role: str = "admin") -> str:
    """Log in through the form; returns the page's CSRF value (from a rendered form)."""
    r = p.raw("POST", "/app/login", data={"token": p.tokens[role], "next": "/app/system/modules"})
    assert r.status_code == 303, r.text
    page = p.raw("GET", "/app/system/bootstrap-tokens").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


@pytest.fixture
def fleet(platform: Platform) -> str:
    publish(platform, "nginx", "1.0.0", files=["/etc/nginx.conf"], state="built")
    return instance(platform, "web-1")


def test_every_page_answers_with_the_strict_headers(platform: Platform, fleet: str) -> None:
    login(platform)
    for path in [*PAGES, f"/app/system/instances/{fleet}"]:
        r = platform.raw("GET", path)
        assert r.status_code == 200, (path, r.text[:300])
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert r.headers["cache-control"] == "no-store", path
    page = platform.raw("GET", f"/app/system/instances/{fleet}").text
    assert "No console captured" in page and "Running digests" in page


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pages_read_while_another_holds_the_write_lock(platform: Platform, fleet: str) -> None:
    """A list page is a read-only transaction: with SQLite's write lock held
    elsewhere, every page still answers (a write transaction would wait for the
    lock and fail with "database is locked")."""
    login(platform)
    with writer(platform.engine).connect() as holder, holder.begin() as held:  # BEGIN IMMEDIATE
        holder.execute(text("UPDATE node_instances SET hostname = hostname"))
        for path in [*PAGES, f"/app/system/instances/{fleet}"]:
            r = platform.raw("GET", path)
            assert r.status_code == 200, (path, r.text[:300])
        # A metrics scrape reads only too.
        assert platform.raw("GET", "/metrics", headers=platform.headers("read")).status_code == 200
        held.rollback()


def test_a_token_secret_is_shown_once_and_never_listed(platform: Platform, fleet: str) -> None:
    csrf = login(platform)
    r = platform.raw("POST", "/app/system/bootstrap-tokens",
                     data={"csrf": csrf, "instance": fleet, "ttl_seconds": "600"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    secret = re.search(r'<pre id="secret">(pnb_[^<]+)</pre>', r.text)
    assert secret
    for path in ("/app/system/bootstrap-tokens", "/app/system/audit"):
        assert secret.group(1) not in platform.raw("GET", path).text
    listed = platform.call("GET", "/bootstrap_tokens").json()["bootstrap_tokens"]
    assert len(listed) == 1 and listed[0]["state"] == "live"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/app/system/bootstrap-tokens/bulk-revoke", "token"),
        ("/app/system/deliveries/bulk-redeliver", "delivery"),
        ("/app/system/modules/bulk-delete", "module"),
        ("/app/system/templates/bulk-assign", "template"),
        ("/app/system/instances/bulk-terminate", "instance"),
        ("/app/system/versions/bulk", "version"),
        ("/app/system/templates/base/bulk-unassign", "module"),
        ("/app/system/nodes/bulk-provision", "node"),
    ],
)
def test_bulk_actions_without_csrf_change_nothing(
    platform: Platform, fleet: str, path: str, field: str
) -> None:
    login(platform)
    platform.call("POST", f"/node_instances/{fleet}/bootstrap_tokens", json={})
    before = platform.snapshot()
    r = platform.raw("POST", path, data={field: ["nginx", fleet, "base"], "csrf": "forged"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = platform.raw("POST", path, data={field: ["nginx"]}, headers={"Origin": "http://evil.test"})
    assert r.status_code == 403 and "another site" in r.text
    assert platform.snapshot() == before


def test_bad_filters_and_cursors_are_refused_with_the_reason(platform: Platform) -> None:
    login(platform)
    r = platform.raw("GET", "/app/system/bootstrap-tokens?state=dead")
    assert r.status_code == 422 and "live, used, expired" in r.text
    r = platform.raw("GET", "/app/system/deliveries?after=yesterday")
    assert r.status_code == 422 and "cursor" in r.text
    r = platform.raw("GET", "/app/system/audit?after=1|x%20y")
    assert r.status_code == 422


def test_bulk_unassign_from_a_template(platform: Platform, fleet: str) -> None:
    publish(platform, "redis", "1.0.0", files=["/etc/redis.conf"], state="live")
    for module in ("nginx", "redis"):
        r = platform.call("POST", "/node_templates/base/assignments", json={"module_name": module})
        assert r.status_code == 201, r.text
    csrf = login(platform)
    r = platform.raw("POST", "/app/system/templates/base/bulk-unassign",
                     data={"csrf": csrf, "module": ["nginx", "redis", "nope"]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.text.count('class="ok"') == 2 and r.text.count('class="refused"') == 1
    left = platform.call("GET", "/node_templates/base").json()["template"]["assignments"]
    assert left == []


def test_bulk_provision_from_the_nodes_page(platform: Platform, fleet: str) -> None:
    for host in ("web-2", "web-3"):
        r = platform.call("POST", "/nodes", json={"hostname": host, "node_template_id": "base"})
        assert r.status_code == 201, r.text
    csrf = login(platform)
    page = platform.raw("GET", "/app/system/nodes?hostname=web-").text
    ids = re.findall(r'name="node" value="([^"]+)"', page)
    assert len(ids) == 3
    r = platform.raw("POST", "/app/system/nodes/bulk-provision",
                     data={"csrf": csrf, "node": [*ids, "no-such-node"]})  # fmt: skip
    assert r.status_code == 200, r.text
    # web-1 runs an instance already: refused (the service's rule), the others done.
    assert r.text.count('class="ok"') == 2 and r.text.count('class="refused"') == 2
    listed = platform.call("GET", "/node_instances").json()["instances"]
    assert sorted(i["hostname"] for i in listed) == ["web-1", "web-2", "web-3"]


class CapturingProvider(RecordingProvider):
    """A provider that keeps its instances' consoles (the QEMU provider's method)."""

    def console(self, provider_ref: str, max_bytes: int) -> bytes | None:
        text = f"[    0.000000] Linux version 6.1 ({provider_ref})\n<script>x()</script>\nlogin:"
        return text.encode()[-max_bytes:]


def test_the_instance_page_shows_the_providers_console(platform: Platform, fleet: str) -> None:
    login(platform)
    platform.app.state.platform.provider = CapturingProvider()
    page = platform.raw("GET", f"/app/system/instances/{fleet}").text
    console = page[page.index('<section id="console">') :]
    assert f"Linux version 6.1 (recorded-{fleet})" in console
    assert "&lt;script&gt;x()&lt;/script&gt;" in console and "<script>x()" not in console
    assert "No console captured" not in page
