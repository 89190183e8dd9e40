"""`powernode system template-composition` and `drift-report` against the in-process app."""

from __future__ import annotations

import json

import httpx
from anyio.from_thread import BlockingPortal
from fastapi import FastAPI
from typer.testing import CliRunner

from powernode.cli.system import Remote
from powernode.cli.system import app as system_app
from tests.platform.conftest import Platform
from tests.platform.test_drift import instance, report
from tests.platform.test_preview import assign, publish

runner = CliRunner()


class PortalTransport(httpx.BaseTransport):
    """A synchronous httpx transport into the ASGI app, through the test's portal."""

    def __init__(self, portal: BlockingPortal, app: FastAPI) -> None:
        self.portal = portal
        self.inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            req = httpx.Request(
                request.method, request.url, headers=request.headers, content=request.read()
            )
            resp = await self.inner.handle_async_request(req)
            body = await resp.aread()
            return httpx.Response(resp.status_code, headers=resp.headers, content=body)

        return self.portal.call(go)


def cli(p: Platform, *args: str) -> tuple[int, str]:
    remote = Remote("http://platform.test", p.tokens["read"], PortalTransport(p.portal, p.app))
    r = runner.invoke(system_app, list(args), obj=remote)
    return r.exit_code, r.output


def test_template_composition_and_drift_report(platform: Platform) -> None:
    publish(
        platform, "system-base", category="system-base", files=["/etc/", "/etc/hosts"], state="live"
    )
    publish(
        platform,
        "my-redis",
        files=["/etc/", "/etc/hosts"],
        requires=["a/system-base"],
        state="live",
    )
    assign(platform, "base", "my-redis")
    code, out = cli(platform, "template-composition", "base")
    assert code == 0, out
    assert "composition of base" in out
    assert "/etc/hosts" in out
    assert "my-redis" in out
    code, out = cli(platform, "template-composition", "base", "--json")
    assert code == 0, out
    assert json.loads(out)["composition"]["union"][1] == {
        "path": "/etc/hosts",
        "kind": "file",
        "winner": "my-redis",
        "shadowed": ["system-base"],
        "providers": ["my-redis", "system-base"],
    }
    iid = instance(platform, "redis-test-1")
    report(platform, iid, {"my-redis": "sha256:my-redis-1.0.0"})
    code, out = cli(platform, "drift-report", "--instance", iid)
    assert code == 0, out
    assert "drift: true" in out
    assert "missing" in out
    code, out = cli(platform, "drift-report", "--template", "base", "--exit-code", "--json")
    assert code == 3, out
    assert json.loads(out)["instances"][0]["hostname"] == "redis-test-1"


def test_drift_report_needs_exactly_one_target(platform: Platform) -> None:
    code, out = cli(platform, "drift-report")
    assert code == 2
    assert "exactly one of --instance or --template" in out
    code, out = cli(platform, "template-composition", "nope")
    assert code == 1
    assert "template 'nope' not found" in out
