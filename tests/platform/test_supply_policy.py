"""Issue 18: promotion gated by a declarative policy over a version's evidence.

Each missing or failing piece of evidence refuses the promotion with its
reason and changes nothing (every table compared before and after); with all
of it the promotion goes through; a VEX statement waives a finding.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from powernode.platform.services import catalog, evidence
from powernode.platform.services.artifacts import IngestedArtifact
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.signing.keys import generate_private_key, key_fingerprint, public_key_pem
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem
from tests.supply import fixtures as fx

KEY = generate_private_key()
OTHER_KEY = generate_private_key()
POLICY: dict[str, Any] = {
    "blessed": {
        "signature": {"key": key_fingerprint(KEY)},
        "provenance": {"builders": [fx.BUILDER]},
        "sbom": {},
        "vulnerabilities": {"block": ["critical", "high"]},
    }
}


def staged_version(p: Platform, fixed_now: Any) -> str:
    """my-redis 0.1.0 as ingest records it (artifact digest fx.DIGEST), moved to staging."""
    body = {
        "name": "my-redis",
        "category_slug": "userland",
        "cosign_public_key": public_key_pem(KEY).decode(),
    }
    assert p.call("POST", "/node_modules", json=body).status_code == 201
    with Session(p.engine) as s:
        ctx = Ctx(s, Actor("ingest", None, frozenset(SCOPES)), fixed_now)
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
    assert move(p, vid, "staging").status_code == 200
    return vid


def move(p: Platform, vid: str, to: str) -> Any:
    return p.call("POST", f"/node_module_versions/{vid}/promote", json={"to": to})


def attach(p: Platform, vid: str, **body: Any) -> dict[str, Any]:
    r = p.call("POST", f"/node_module_versions/{vid}/evidence", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()["evidence"]
    return out


def set_policy(p: Platform, policy: dict[str, Any] = POLICY) -> None:
    r = p.call("PUT", "/node_modules/my-redis/promotion_policy", json={"policy": policy})
    assert r.status_code == 200, r.text


def full_evidence(p: Platform, vid: str) -> None:
    attach(p, vid, kind="sbom", document=fx.sbom())
    attach(p, vid, kind="provenance", envelope=fx.provenance_envelope(KEY))


def refused(p: Platform, vid: str, *fragments: str) -> dict[str, Any]:
    before = p.snapshot()
    body = assert_problem(move(p, vid, "blessed"), 409, "cannot move to blessed", *fragments)
    assert p.snapshot() == before
    assert body["verdict"]["allowed"] is False
    return body


def rule(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in body["verdict"]["rules"] if r["rule"] == name)
    return found


def test_all_evidence_lets_the_promotion_through(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    full_evidence(platform, vid)
    r = move(platform, vid, "blessed")
    assert r.status_code == 200, r.text
    got = platform.call("GET", f"/node_module_versions/{vid}/evidence", role="read").json()
    blessed = got["verdicts"]["blessed"]
    assert blessed["allowed"] is True and blessed["policy"] == "module my-redis"
    assert [r["rule"] for r in blessed["rules"]] == [
        "signature",
        "provenance",
        "sbom",
        "vulnerabilities",
    ]
    assert all(r["passed"] for r in blessed["rules"])
    prov = next(r for r in blessed["rules"] if r["rule"] == "provenance")
    assert prov["evidence"][0]["builder"] == fx.BUILDER
    assert prov["evidence"][0]["subject"] == fx.DIGEST
    assert {e["kind"] for e in got["evidence"]} == {"sbom", "provenance"}


def test_no_sbom_is_refused(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    attach(platform, vid, kind="provenance", envelope=fx.provenance_envelope(KEY))
    body = refused(platform, vid, "sbom: no SBOM is attached")
    assert rule(body, "provenance")["passed"] is True


def test_unsigned_provenance_is_refused(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    attach(platform, vid, kind="sbom", document=fx.sbom())
    ev = attach(platform, vid, kind="provenance", envelope=fx.provenance_envelope(None))
    assert ev["verified"] is False and "not signed" in ev["problem"]
    body = refused(platform, vid, "provenance", "is not signed by a trusted key")
    assert rule(body, "provenance")["evidence"][0]["verified"] is False


def test_provenance_signed_by_another_key_is_refused(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    attach(platform, vid, kind="sbom", document=fx.sbom())
    attach(platform, vid, kind="provenance", envelope=fx.provenance_envelope(OTHER_KEY))
    refused(platform, vid, "is not signed by a trusted key", "does not verify")


def test_tampered_provenance_is_refused(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    attach(platform, vid, kind="sbom", document=fx.sbom())
    env = fx.provenance_envelope(KEY)
    other = fx.provenance_envelope(KEY, builder=fx.BUILDER, digest="sha256:" + "ef" * 32)
    env["payload"] = other["payload"]  # a valid statement under the wrong signature
    ev = attach(platform, vid, kind="provenance", envelope=env)
    assert ev["verified"] is False
    refused(platform, vid, "does not verify")


def test_provenance_from_another_builder_is_refused(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    attach(platform, vid, kind="sbom", document=fx.sbom())
    attach(platform, vid, kind="provenance", envelope=fx.provenance_envelope(KEY, fx.OTHER_BUILDER))
    refused(platform, vid, f"comes from builder {fx.OTHER_BUILDER!r}", fx.BUILDER)


def test_provenance_for_another_artifact_is_refused(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    attach(platform, vid, kind="sbom", document=fx.sbom())
    other = "sha256:" + "ef" * 32
    attach(platform, vid, kind="provenance", envelope=fx.provenance_envelope(KEY, digest=other))
    refused(platform, vid, f"is for {other}, not this version's {fx.DIGEST}")


def test_unwaived_critical_finding_is_refused_and_vex_waives_it(
    platform: Platform, fixed_now: Any
) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    feed = [
        fx.osv_record("DEBIAN-CVE-2026-1000", "openssl", "3.0.11-1~deb12u3", cvss=fx.CRITICAL_CVSS),
        fx.osv_record("DEBIAN-CVE-2026-1001", "openssl", "3.0.11-1~deb12u1", severity="CRITICAL"),
        fx.osv_record("DEBIAN-CVE-2026-1002", "zlib", "1:1.2.13.dfsg-2", severity="LOW"),
        fx.osv_record(
            "DEBIAN-CVE-2026-1003", "redis", None, severity="HIGH", ecosystem="Debian:11"
        ),
    ]
    r = platform.call("POST", "/vulnerability_feeds", json={"records": feed, "source": "t"})
    assert r.status_code == 200, r.text
    full_evidence(platform, vid)
    got = platform.call("GET", f"/node_module_versions/{vid}/evidence").json()
    # deb12u2 < deb12u3 (fixed) but > deb12u1; 1002 is low; 1003 is for bullseye.
    assert sorted((f["osv_id"], f["package"]) for f in got["findings"]) == [
        ("DEBIAN-CVE-2026-1000", "libssl3"),
        ("DEBIAN-CVE-2026-1000", "openssl"),
        ("DEBIAN-CVE-2026-1002", "zlib1g"),
    ]
    body = refused(platform, vid, "vulnerabilities", "DEBIAN-CVE-2026-1000 (critical, openssl")
    assert rule(body, "vulnerabilities")["passed"] is False
    # An unsigned or wrongly signed VEX does not waive it.
    attach(platform, vid, kind="vex", envelope=fx.vex_envelope(OTHER_KEY, "CVE-2026-1000"))
    refused(platform, vid, "DEBIAN-CVE-2026-1000 (critical")
    # The author's not_affected statement (by the CVE alias) does.
    ev = attach(platform, vid, kind="vex", envelope=fx.vex_envelope(KEY, "CVE-2026-1000"))
    assert ev["verified"] is True
    r = move(platform, vid, "blessed")
    assert r.status_code == 200, r.text
    got = platform.call("GET", f"/node_module_versions/{vid}/evidence").json()
    waived = [f for f in got["findings"] if f["osv_id"] == "DEBIAN-CVE-2026-1000"]
    assert all("not_affected" in (f["waived_by"] or "") for f in waived)


def test_affected_vex_does_not_waive(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    set_policy(platform)
    feed = [fx.osv_record("DSA-5999-1", "openssl", "3.0.11-1~deb12u3", severity="HIGH")]
    platform.call("POST", "/vulnerability_feeds", json={"records": feed})
    full_evidence(platform, vid)
    env = fx.vex_envelope(KEY, "DSA-5999-1", "affected", action_statement="upgrade openssl")
    attach(platform, vid, kind="vex", envelope=env)
    refused(platform, vid, "DSA-5999-1 (high")


def test_category_policy_applies_when_the_module_has_none(
    platform: Platform, fixed_now: Any
) -> None:
    vid = staged_version(platform, fixed_now)
    r = platform.call(
        "PUT",
        "/node_module_categories/userland/promotion_policy",
        json={"policy": {"blessed": {"sbom": {}}}},
    )
    assert r.status_code == 200, r.text
    body = refused(platform, vid, "category userland policy", "no SBOM is attached")
    assert body["verdict"]["policy"] == "category userland"
    # Demotion and retirement are never held back.
    assert platform.call("POST", f"/node_module_versions/{vid}/demote", json={}).status_code == 200


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ({"blessed": {"sbom": {}, "sbom_typo": {}}}, "blessed.sbom_typo"),
        ({"blessed": {"signature": {"identity": "("}}}, "not a regular expression"),
        ({"blessed": {"vulnerabilities": {"block": ["severe"]}}}, "blessed.vulnerabilities.block"),
        ({"blessed": {"provenance": {"builders": []}}}, "blessed.provenance.builders"),
        ({"approved": {}}, "approved"),
    ],
)
def test_bad_policy_is_refused_and_changes_nothing(
    platform: Platform, fixed_now: Any, policy: dict[str, Any], fragment: str
) -> None:
    staged_version(platform, fixed_now)
    before = platform.snapshot()
    r = platform.call("PUT", "/node_modules/my-redis/promotion_policy", json={"policy": policy})
    assert_problem(r, 422, fragment)
    assert platform.snapshot() == before


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"kind": "sbom", "document": {"bomFormat": "SPDX"}}, "not a CycloneDX"),
        ({"kind": "provenance", "envelope": {"payload": "!!"}}, "no payloadType"),
        (
            {"kind": "provenance", "envelope": {"payloadType": "x", "payload": "e30="}},
            "_type",
        ),
        (
            {"kind": "vex", "envelope": fx.provenance_envelope(KEY)},
            "@context",
        ),
        ({"kind": "signature", "payload": "bm90IGpzb24=", "signature": "AA=="}, "simple-signing"),
    ],
)
def test_bad_evidence_is_refused_and_changes_nothing(
    platform: Platform, fixed_now: Any, body: dict[str, Any], fragment: str
) -> None:
    vid = staged_version(platform, fixed_now)
    before = platform.snapshot()
    r = platform.call("POST", f"/node_module_versions/{vid}/evidence", json=body)
    assert_problem(r, 422, fragment)
    assert platform.snapshot() == before


def test_signature_rule_sees_the_signer_ingest_verified(platform: Platform, fixed_now: Any) -> None:
    vid = staged_version(platform, fixed_now)
    policy = {
        "blessed": {"signature": {"identity": r"^https://ci\.test/.+$", "issuer": "^https://i$"}}
    }
    set_policy(platform, policy)
    body = refused(platform, vid, "signature", "identity None does not match")
    assert rule(body, "signature")["evidence"][0]["source"] == "ingest"

    def ingest(identity: str) -> None:
        art = IngestedArtifact(
            name="my-redis", version="0.1.0", composefs_digest="sha256:" + "cd" * 32,
            manifest_digest=fx.DIGEST, artifact_ref=f"{fx.REPO}@{fx.DIGEST}", manifest={},
            file_list=(), signer=f"{identity} (issuer https://i)", signer_key="SHA256:k",
            signer_identity=identity, signer_issuer="https://i",
        )  # fmt: skip
        with Session(platform.engine) as s:
            ctx = Ctx(s, Actor("ingest", None, frozenset(SCOPES)), fixed_now)
            evidence.record_ingest_signature(ctx, catalog.get_version(ctx, vid), art)
            s.commit()

    ingest("https://other.test/x")
    refused(platform, vid, "identity 'https://other.test/x' does not match")
    ingest("https://ci.test/my-redis")
    r = move(platform, vid, "blessed")
    assert r.status_code == 200, r.text
