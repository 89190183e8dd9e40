"""The operator console in a real browser: Debian's headless Chromium via Playwright.

The platform app (SQLite and PostgreSQL) is served by uvicorn on 127.0.0.1; the
browser logs in with tokens, clicks through the pages, and a screenshot of each
page is saved under the test's directory and checked.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import update

from powernode.platform.db import NodeInstance
from powernode.platform.db.ingest import ModuleIngest
from tests.platform.conftest import Platform
from tests.platform.test_drift import instance
from tests.platform.test_preview import publish
from tests.platform.test_webhooks import create_module, deliver

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

# The flags the machine needs: no sandbox as root, no background traffic.
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def served(platform: Platform) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(platform.app, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Operator:
    """One person at the console: their own browser context (cookies)."""

    def __init__(self, browser: Any, base: str, token: str, shots: Path, who: str) -> None:
        self.ctx = browser.new_context()
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(15_000)
        self.base = base
        self.shots = shots
        self.who = who
        self.page.goto(base + "/app/system/modules")
        assert "/app/login" in self.page.url  # no session: the login page
        self.page.fill("input[name=token]", token)
        self.page.click("#login button[type=submit]")
        self.page.wait_for_url("**/app/system/modules")

    def go(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page

    def shot(self, name: str, must_show: str) -> None:
        """Save a screenshot and check it, and that the page shows ``must_show``."""
        path = self.shots / f"{self.who}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000, path
        assert must_show in self.page.content(), (name, must_show)


def test_register_promote_with_approval_assign_provision_drift(
    platform: Platform, served: str, browser: Any, tmp_path: Path
) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    alice = Operator(browser, served, platform.tokens["admin"], shots, "alice")
    assert alice.page.inner_text("#actor") == "admin"
    alice.shot("modules-empty", "Register a module")

    # Register a module that needs a second person's approval to go live.
    page = alice.go("/app/system/modules/new")
    page.fill("input[name=name]", "my-redis")
    page.select_option("select[name=category]", "userland")
    page.check("input[name=require_approval]")
    alice.shot("module-new", "Register a module")
    page.click("#module-new button[type=submit]")
    page.wait_for_url("**/app/system/modules/my-redis")
    # Its CI reports version 1.0.0 (the webhook's part, here through the API).
    publish(platform, "my-redis", "1.0.0", files=["/etc/redis.conf"], state="built")
    page.reload()
    alice.shot("module", "second person")

    for to in ("staging", "blessed"):
        page.click(f"tr[data-version='1.0.0'] button[data-promote={to}]")
        page.wait_for_url("**/app/system/modules/my-redis")
        assert page.inner_text("tr[data-version='1.0.0'] .state") == to

    # Live without approval: refused, with the service's own words.
    page.click("tr[data-version='1.0.0'] button[data-promote=live]")
    assert "approval" in page.inner_text("#refusal")
    alice.shot("refused-approval", "approve")

    # Bob approves; his approval is visible as his.
    bob = Operator(browser, served, platform.tokens["approver"], shots, "bob")
    bob.go("/app/system/modules/my-redis")
    bob.page.click("tr[data-version='1.0.0'] button[data-approve]")
    bob.page.wait_for_url("**/app/system/modules/my-redis")
    assert "approved by approver" in bob.page.inner_text("tr[data-version='1.0.0'] .approvals")
    bob.shot("approved", "approved by approver")

    page = alice.go("/app/system/modules/my-redis")
    page.click("tr[data-version='1.0.0'] button[data-promote=live]")
    page.wait_for_url("**/app/system/modules/my-redis")
    assert page.inner_text("tr[data-version='1.0.0'] .state") == "live"
    assert "(used)" in page.inner_text("tr[data-version='1.0.0'] .approvals")
    alice.shot("live", "live")

    # Assign it to template base; the preview shows which module wins the file.
    page = alice.go("/app/system/templates/base")
    page.fill("#assign input[name=module]", "my-redis")
    page.click("#assign button[type=submit]")
    page.wait_for_url("**/app/system/templates/base")
    assert "my-redis" in page.inner_text("#assignments")
    assert "/etc/redis.conf" in page.inner_text("#union")
    alice.shot("template", "Which module wins each path")

    # Register a node and provision an instance: drift until it runs the module.
    page = alice.go("/app/system/instances")
    page.fill("#node-new input[name=hostname]", "redis-1")
    page.fill("#node-new input[name=template]", "base")
    page.click("#node-new button[type=submit]")
    page.wait_for_url("**/app/system/instances")
    page.fill("#provision input[name=node]", "redis-1")
    page.click("#provision button[type=submit]")
    page.wait_for_url("**/app/system/instances/*")
    assert page.inner_text("#drift") == "drift: true"
    alice.shot("instance-drift", "missing")
    iid = page.url.rsplit("/", 1)[1]
    # The node's agent reports what it runs (the heartbeat's effect on the row).
    versions = platform.call("GET", "/node_modules/my-redis/versions").json()["versions"]
    with platform.engine.begin() as c:
        c.execute(
            update(NodeInstance)
            .where(NodeInstance.id == iid)
            .values(running_module_digests={"my-redis": versions[0]["composefs_digest"]})
        )
    page.reload()
    assert page.inner_text("#drift") == "drift: false"
    alice.shot("instance-in-line", "drift: false")

    for path, must in [
        ("/app/system/instances", "redis-1"),
        ("/app/system/events", "Fleet events"),
        ("/app/system/audit", "module_version.promote"),
        ("/app/system/templates", "base"),
    ]:
        alice.go(path)
        alice.shot(path.rsplit("/", 1)[1], must)


def test_bulk_promote_ten_versions(
    platform: Platform, served: str, browser: Any, tmp_path: Path
) -> None:
    for i in range(10):
        publish(platform, "nginx", f"1.{i}.0", state="built")
    alice = Operator(browser, served, platform.tokens["admin"], tmp_path, "alice")
    page = alice.go("/app/system/versions?module=nginx&state=built")
    assert page.locator("#versions tbody input[name=version]").count() == 10
    page.check("#versions thead input[data-select-all]")
    assert page.inner_text("[data-selected-count]") == "10 selected"
    page.select_option("select[name=bulk_to]", "staging")
    page.click("button[data-bulk]")
    page.wait_for_url("**/app/system/versions/bulk")
    assert page.locator("#results tr.ok").count() == 10
    alice.shot("bulk", "Promotion to staging")
    states = {
        v["promotion_state"]
        for v in platform.call("GET", "/node_modules/nginx/versions").json()["versions"]
    }
    assert states == {"staging"}


def test_an_action_outside_the_scope_is_refused(
    platform: Platform, served: str, browser: Any, tmp_path: Path
) -> None:
    publish(platform, "nginx", "1.0.0", state="built")
    before = platform.snapshot()
    reader = Operator(browser, served, platform.tokens["read"], tmp_path, "reader")
    page = reader.go("/app/system/modules/nginx")
    page.click("tr[data-version='1.0.0'] button[data-promote=staging]")
    refusal = page.inner_text("#refusal")
    assert "scope" in refusal and "write" in refusal
    reader.shot("refused-scope", "403")
    assert platform.snapshot() == before


def test_a_bad_token_is_refused_at_login(served: str, browser: Any) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(served + "/app/login")
    page.fill("input[name=token]", "pnt_not-a-token")
    page.click("#login button[type=submit]")
    assert page.inner_text("#login-error")
    assert not ctx.cookies()  # no session was made


def test_tokens_deliveries_and_every_list_in_bulk(
    platform: Platform, served: str, browser: Any, tmp_path: Path
) -> None:
    """Bootstrap tokens (created, shown once, bulk-revoked), deliveries (bulk
    redelivered), the instance page's digests and console section, the bulk
    actions of the other lists, and a screenshot of every page."""
    secret = create_module(platform)
    for i, tag in enumerate(("v1.0.0", "v1.1.0")):
        deliver(platform, {"module": "my-redis", "tag": tag}, secret, delivery=f"d-{i}")
    with platform.engine.begin() as c:  # the worker found both artifacts unsigned
        c.execute(update(ModuleIngest).values(state="rejected", reason="no signature"))
    publish(platform, "nginx", "1.0.0", files=["/etc/nginx.conf"], state="live")
    iid = instance(platform, "web-1")
    shots = tmp_path / "shots"
    shots.mkdir()
    alice = Operator(browser, served, platform.tokens["admin"], shots, "alice")

    # A token for the instance, from its page: the secret is shown once, never listed.
    page = alice.go(f"/app/system/instances/{iid}")
    assert "No console captured" in page.inner_text("#console")
    alice.shot("instance", "Running digests")
    page.click("#token-new button[type=submit]")
    secret_shown = page.inner_text("#secret")
    assert secret_shown.startswith("pnb_")
    alice.shot("token-created", "shown only this once")
    page = alice.go("/app/system/bootstrap-tokens")
    page.fill("#token-new input[name=instance]", iid)
    page.click("#token-new button[type=submit]")
    page = alice.go("/app/system/bootstrap-tokens?state=live")
    assert page.locator("#tokens tbody input[name=token]").count() == 2
    assert secret_shown not in page.content()
    alice.shot("bootstrap-tokens", "Revoke selected")
    page.once("dialog", lambda d: d.accept())
    page.check("#tokens thead input[data-select-all]")
    page.click("button[data-bulk]")
    page.wait_for_url("**/bulk-revoke")
    assert page.locator("#results tr.ok").count() == 2
    alice.shot("tokens-revoked", "Bootstrap token revocation")
    listed = platform.call("GET", "/bootstrap_tokens").json()["bootstrap_tokens"]
    assert {t["state"] for t in listed} == {"expired"}

    # Deliveries: both rejected, redelivered in bulk, queued again.
    page = alice.go("/app/system/deliveries?status=rejected")
    assert page.locator("#deliveries tbody input[name=delivery]").count() == 2
    alice.shot("deliveries", "Redeliver selected")
    page.check("#deliveries thead input[data-select-all]")
    page.click("button[data-bulk]")
    page.wait_for_url("**/bulk-redeliver")
    assert page.locator("#results tr.ok").count() == 2
    alice.shot("redelivered", "ingest queued")
    rows = platform.call("GET", "/webhook_deliveries").json()["deliveries"]
    assert {d["status"] for d in rows} == {"queued"}

    # Templates: assign a module to the selected templates in bulk.
    page = alice.go("/app/system/templates")
    page.check("#templates tbody input[value=base]")
    page.fill("#bulk input[name=module]", "nginx")
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-bulk]")
    page.wait_for_url("**/bulk-assign")
    assert page.locator("#results tr.ok").count() == 1
    alice.shot("templates-assigned", "Assign nginx")

    # A template's assignments: selected for bulk unassign (checkboxes tied to the
    # form by form=, outside it), counted; not submitted here (test_console_pages).
    page = alice.go("/app/system/templates/base")
    page.check("#assignments tbody input[value=nginx]")
    assert page.inner_text("#bulk [data-selected-count]") == "1 selected"

    # Versions: demote in bulk (one step back).
    page = alice.go("/app/system/versions?module=nginx")
    page.check("#versions thead input[data-select-all]")
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-bulk][value=demote]")
    page.wait_for_url("**/system/versions/bulk")
    assert "now blessed" in page.inner_text("#results")

    # Nodes: provision an instance of each selected node (web-1 has one: refused).
    r = platform.call("POST", "/nodes", json={"hostname": "web-2", "node_template_id": "base"})
    assert r.status_code == 201, r.text
    page = alice.go("/app/system/nodes")
    page.check("#nodes thead input[data-select-all]")
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-bulk]")
    page.wait_for_url("**/bulk-provision")
    assert page.locator("#results tr.ok").count() == 1
    assert page.locator("#results tr.refused").count() == 1
    alice.shot("nodes-provisioned", "Provisioning")

    # Instances: terminate in bulk, each on its own.
    page = alice.go("/app/system/instances")
    page.check("#instances thead input[data-select-all]")
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-bulk]")
    page.wait_for_url("**/bulk-terminate")
    assert "now terminated" in page.inner_text("#results")

    for path, must in [
        ("/app/system/modules", "Register a module"),
        ("/app/system/modules/new", "Register a module"),
        ("/app/system/modules/nginx", "nginx"),
        ("/app/system/versions", "Promote selected"),
        ("/app/system/templates", "Assign"),
        ("/app/system/templates/base", "Which module wins each path"),
        ("/app/system/nodes", "web-1"),
        ("/app/system/instances", "web-1"),
        (f"/app/system/instances/{iid}", "Console log"),
        ("/app/system/bootstrap-tokens", "expired"),
        ("/app/system/deliveries", "d-1"),
        ("/app/system/events", "Fleet events"),
        ("/app/system/audit", "instance.bootstrap_token.revoke"),
    ]:
        alice.go(path)
        alice.shot("page-" + path.strip("/").replace("/", "-")[:60], must)
    assert len(list(shots.glob("alice-page-*.png"))) == 13

    # Modules: bulk delete; nginx is assigned, so only it is refused.
    page = alice.go("/app/system/modules")
    page.check("#modules thead input[data-select-all]")
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-bulk]")
    page.wait_for_url("**/bulk-delete")
    assert page.locator("#results tr.refused").count() == 1
    assert "nginx" in page.inner_text("#results tr.refused")
    alice.shot("modules-deleted", "Module deletion")


def test_a_reader_is_refused_the_new_lists_actions(
    platform: Platform, served: str, browser: Any, tmp_path: Path
) -> None:
    iid = instance(platform, "web-1")
    platform.call("POST", f"/node_instances/{iid}/bootstrap_tokens", json={})
    before = platform.snapshot()
    reader = Operator(browser, served, platform.tokens["read"], tmp_path, "reader")
    page = reader.go("/app/system/bootstrap-tokens")
    page.check("#tokens thead input[data-select-all]")
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-bulk]")
    page.wait_for_url("**/bulk-revoke")
    assert page.locator("#results tr.refused").count() == 1
    assert "scope" in page.inner_text("#results")
    reader.shot("refused-revoke", "refused")
    page = reader.go(f"/app/system/instances/{iid}")
    page.click("#token-new button[type=submit]")
    assert "scope" in page.inner_text("#refusal")
    assert platform.snapshot() == before
