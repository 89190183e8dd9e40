"""Issue 18: evidence signed keylessly is verified by the module's identity and issuer.

A module whose trust is keyless (``cosign_identity_regexp`` +
``cosign_issuer_regexp``) gets provenance whose DSSE envelope is signed by a
short-lived certificate: the evidence API checks the chain against the
platform's ``cosign_roots_file``, the identity and the issuer, and the policy
sees the signer. Another identity, or no configured roots, is stored as
unverified with its reason, and the promotion is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from powernode.platform.services import catalog
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.signing.keys import generate_private_key
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem
from tests.signing.testca import WORKFLOW, FakeCA, pem
from tests.supply import fixtures as fx

IDENTITY = r"https://github\.com/acme/.*"
ISSUER = r"https://token\.actions\.githubusercontent\.com"
POLICY = {"blessed": {"provenance": {"builders": [fx.BUILDER]}}}


def keyless_version(p: Platform, now: datetime) -> str:
    body = {
        "name": "my-redis",
        "category_slug": "userland",
        "cosign_identity_regexp": IDENTITY,
        "cosign_issuer_regexp": ISSUER,
    }
    assert p.call("POST", "/node_modules", json=body).status_code == 201, body
    with Session(p.engine) as s:
        ctx = Ctx(s, Actor("ingest", None, frozenset(SCOPES)), now)
        v = catalog.record_ingested_version(
            ctx,
            "my-redis",
            version_string="0.1.0",
            verified=catalog.VerifiedFields(
                composefs_digest="sha256:" + "cd" * 32, artifact_ref=f"{fx.REPO}@{fx.DIGEST}"
            ),
        )
        vid = v.id
        s.commit()
    assert p.call("POST", f"/node_module_versions/{vid}/promote", json={"to": "staging"}).is_success
    r = p.call("PUT", "/node_modules/my-redis/promotion_policy", json={"policy": POLICY})
    assert r.status_code == 200, r.text
    return vid


def trust_roots(p: Platform, ca: FakeCA, tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(ca.root_pem)
    state = p.app.state.platform
    state.settings = state.settings.model_copy(
        update={"cosign_roots_file": roots, "cosign_insecure_ignore_tlog": True}
    )


def keyless_provenance(ca: FakeCA, now: datetime, uri: str = WORKFLOW) -> dict[str, Any]:
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    hour = timedelta(hours=1)
    cert = ca.leaf(key, uri=uri, not_before=now - hour, not_after=now + hour)
    return {
        "kind": "provenance",
        "envelope": fx.provenance_envelope(key),
        "certificate": pem(cert).decode(),
        "chain": ca.chain_pem.decode(),
    }


def attach(p: Platform, vid: str, body: dict[str, Any]) -> dict[str, Any]:
    r = p.call("POST", f"/node_module_versions/{vid}/evidence", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()["evidence"]
    return out


def test_keyless_provenance_is_verified_by_identity(
    platform: Platform, fixed_now: datetime, tmp_path: Path
) -> None:
    ca = FakeCA()
    trust_roots(platform, ca, tmp_path)
    vid = keyless_version(platform, fixed_now)
    ev = attach(platform, vid, keyless_provenance(ca, fixed_now))
    assert ev["verified"] is True, ev
    assert ev["summary"]["identity"] == WORKFLOW
    assert ev["summary"]["issuer"] == "https://token.actions.githubusercontent.com"
    assert WORKFLOW in ev["signer"]
    r = platform.call("POST", f"/node_module_versions/{vid}/promote", json={"to": "blessed"})
    assert r.status_code == 200, r.text


def test_keyless_provenance_of_another_identity_is_refused(
    platform: Platform, fixed_now: datetime, tmp_path: Path
) -> None:
    ca = FakeCA()
    trust_roots(platform, ca, tmp_path)
    vid = keyless_version(platform, fixed_now)
    other = "https://github.com/mallory/x/.github/workflows/r.yml@refs/heads/main"
    ev = attach(platform, vid, keyless_provenance(ca, fixed_now, uri=other))
    assert ev["verified"] is False
    assert "does not match" in ev["problem"] and "mallory" in ev["problem"]
    before = platform.snapshot()
    r = platform.call("POST", f"/node_module_versions/{vid}/promote", json={"to": "blessed"})
    assert_problem(r, 409, "cannot move to blessed", "provenance")
    assert platform.snapshot() == before


def test_keyless_provenance_from_another_ca_is_refused(
    platform: Platform, fixed_now: datetime, tmp_path: Path
) -> None:
    trust_roots(platform, FakeCA(), tmp_path)
    vid = keyless_version(platform, fixed_now)
    ev = attach(platform, vid, keyless_provenance(FakeCA(name="rogue"), fixed_now))
    assert ev["verified"] is False and ev["problem"]


def test_keyless_module_without_platform_roots_stores_unverified(
    platform: Platform, fixed_now: datetime
) -> None:
    vid = keyless_version(platform, fixed_now)
    ev = attach(platform, vid, keyless_provenance(FakeCA(), fixed_now))
    assert ev["verified"] is False
    assert "cosign_roots_file" in ev["problem"]


def test_keyless_vex_is_verified_and_applied(
    platform: Platform, fixed_now: datetime, tmp_path: Path
) -> None:
    ca = FakeCA()
    trust_roots(platform, ca, tmp_path)
    vid = keyless_version(platform, fixed_now)
    attach(platform, vid, {"kind": "sbom", "document": fx.sbom()})
    record = fx.osv_record("DEBIAN-CVE-2026-3001", "redis", "5:7.0.15-1~deb12u2", severity="HIGH")
    r = platform.call("POST", "/vulnerability_feeds", json={"records": [record]})
    assert r.status_code == 200, r.text
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    hour = timedelta(hours=1)
    cert = ca.leaf(key, not_before=fixed_now - hour, not_after=fixed_now + hour)
    body = {
        "kind": "vex",
        "envelope": fx.vex_envelope(key, "DEBIAN-CVE-2026-3001"),
        "certificate": pem(cert).decode(),
        "chain": ca.chain_pem.decode(),
    }
    ev = attach(platform, vid, body)
    assert ev["verified"] is True and ev["summary"]["identity"] == WORKFLOW
    got = platform.call("GET", f"/node_module_versions/{vid}/evidence", role="read").json()
    [finding] = got["findings"]
    assert finding["osv_id"] == "DEBIAN-CVE-2026-3001"
    assert finding["waived_by"] and finding["waived_by"].startswith("not_affected")
