"""The console's evidence page of a version (server-rendered; no browser needed)."""

from __future__ import annotations

import html
from typing import Any

from tests.platform.conftest import Platform
from tests.platform.test_supply_policy import POLICY, attach, set_policy, staged_version
from tests.supply import fixtures as fx


def test_version_evidence_page_shows_verdicts_evidence_and_findings(
    platform: Platform, fixed_now: Any
) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform, POLICY)
    rec = fx.osv_record("DEBIAN-CVE-2026-7000", "openssl", None, severity="CRITICAL")
    platform.call("POST", "/vulnerability_feeds", json={"records": [rec]})
    attach(platform, vid, kind="sbom", document=fx.sbom())
    attach(platform, vid, kind="provenance", envelope=fx.provenance_envelope(None))
    r = platform.raw("GET", f"/app/system/versions/{vid}/evidence", follow_redirects=False)
    assert r.status_code in {302, 303, 307} and "/app/login" in r.headers["location"]
    login = platform.raw(
        "POST", "/app/login", data={"token": platform.tokens["read"], "next": "/app"},
        follow_redirects=False,
    )  # fmt: skip
    assert login.status_code in {302, 303}, login.text
    page = platform.raw("GET", f"/app/system/versions/{vid}/evidence")
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    assert 'data-target="blessed" data-rule="provenance"' in text
    assert "is not signed by a trusted key" in text
    assert "<strong>refused</strong>" in text
    assert 'data-osv="DEBIAN-CVE-2026-7000"' in text and 'data-kind="sbom"' in text
    module = platform.raw("GET", "/app/system/modules/my-redis")
    assert f"/app/system/versions/{vid}/evidence" in module.text
    missing = platform.raw("GET", "/app/system/versions/nope/evidence")
    assert missing.status_code == 404
