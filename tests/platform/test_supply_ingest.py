"""Issue 18: ingest pulls a version's provenance and SBOM from the registry by itself.

A module is pushed and signed to a real distribution registry (Debian's
``docker-registry``, no referrers API), ``powernode supply attest`` attaches
its signed provenance and SBOM as referrers (the tag schema fallback), and a
tampered copy of the provenance is attached beside them. The ingest worker
finds all of them through one referrers lookup and verifies them through the
evidence API's code: the version arrives with its evidence, the tampered
attestation is stored unverified with its reason, and a policy requiring
signature, provenance from the builder and an SBOM lets it through.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from powernode.cli.module.evidence import app as supply_app
from powernode.oci import referrers as refs
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.refs import parse_reference
from powernode.platform.services.artifacts import PublishArtifactSource
from powernode.platform.worker import IngestWorker
from powernode.publish import push_artifact, sign_artifact
from powernode.publish.format import canonical_json
from powernode.signing.keys import (
    ScryptParams,
    generate_private_key,
    key_fingerprint,
    public_key_pem,
    write_key_pair,
)
from powernode.signing.policy import UnsafeValidityAtNow
from powernode.supply import attest, dsse
from tests.oci.registry_fixture import RunningRegistry, oci_registry
from tests.platform.conftest import Platform
from tests.publish.artifacts import make_artifact, small_files
from tests.signing.testca import WORKFLOW, FakeCA, pem
from tests.supply import fixtures as fx

__all__ = ["oci_registry"]  # the fixture
pytestmark = pytest.mark.registry

KEY = generate_private_key()
POLICY: dict[str, Any] = {
    "blessed": {
        "signature": {"key": key_fingerprint(KEY)},
        "provenance": {"builders": [fx.BUILDER]},
        "sbom": {"min_components": 1},
    }
}


def publish(tmp_path: Path, url: str, name: str) -> str:
    """Push and sign ``name`` 0.1.0, attest it with the CLI, add a tampered provenance."""
    repo = f"default/modules/{name}"
    out = make_artifact(tmp_path / "out", small_files(), name=name, version="0.1.0")
    (out / "sbom.cdx.json").write_text(json.dumps(fx.sbom()))
    config = json.loads((out / "module.json").read_bytes())
    config["manifest"] = {"name": name, "schema_version": 1}  # a platform-valid manifest
    (out / "module.json").write_bytes(canonical_json(config))
    (out / "manifest.json").write_bytes(canonical_json(config["manifest"]))
    with DistributionRegistry(url) as reg:
        ref = parse_reference(f"{repo}:v0.1.0")
        digest = push_artifact(reg, ref, out)
        sign_artifact(reg, ref, KEY)
    write_key_pair(
        tmp_path / "cosign.key",
        tmp_path / "cosign.pub",
        KEY,
        "pw",
        params=ScryptParams(n=1024, r=8, p=1),
    )
    args = [
        "attest", str(out), "--registry", url, "--ref", f"{repo}@{digest}",
        "--key", str(tmp_path / "cosign.key"), "--builder", fx.BUILDER,
    ]  # fmt: skip
    r = CliRunner().invoke(supply_app, args, env={"COSIGN_PASSWORD": "pw"})
    assert r.exit_code == 0, r.output
    good = dsse.parse(json.dumps(fx.provenance_envelope(KEY, digest=str(digest))))
    doc = json.loads(good.payload)
    doc["subject"][0]["name"] = "evil/demo"  # changed after signing
    tampered = dsse.Envelope(good.payload_type, json.dumps(doc).encode(), good.signatures)
    with DistributionRegistry(url) as reg:
        attest.attach_provenance(reg, repo, digest, tampered)
        # No referrers API here: the evidence sits under the referrers tag schema's tag.
        assert refs.fallback_tag(digest) in reg.list_tags(repo)
    return str(digest)


def test_ingest_records_the_evidence_among_the_referrers(
    platform: Platform, oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    name = f"demo-{uuid.uuid4().hex[:8]}"  # the registry outlives one test
    body = {
        "name": name,
        "category_slug": "userland",
        "cosign_public_key": public_key_pem(KEY).decode(),
    }
    assert platform.call("POST", "/node_modules", json=body).status_code == 201
    r = platform.call("PUT", f"/node_modules/{name}/promotion_policy", json={"policy": POLICY})
    assert r.status_code == 200, r.text
    digest = publish(tmp_path, oci_registry.url, name)

    worker = IngestWorker(
        platform.app.state.platform.sessions, PublishArtifactSource(oci_registry.url)
    )
    report = worker.run_once()
    assert report.built == 1, report

    versions = platform.call("GET", f"/node_modules/{name}/versions", role="read").json()
    [v] = versions["versions"]
    got = platform.call("GET", f"/node_module_versions/{v['id']}/evidence", role="read").json()
    assert got["subject"] == digest
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in got["evidence"]:
        by_kind.setdefault(e["kind"], []).append(e)
    assert len(by_kind["sbom"]) == 1 and by_kind["sbom"][0]["summary"]["components"] >= 1
    provs = by_kind["provenance"]
    assert len(provs) == 2
    [ok] = [p for p in provs if p["verified"]]
    [bad] = [p for p in provs if not p["verified"]]
    assert ok["summary"]["builder"] == fx.BUILDER and ok["summary"]["subject"] == digest
    assert "no signature of the envelope is trusted" in bad["problem"], bad
    assert got["verdicts"]["blessed"]["allowed"] is True, got["verdicts"]["blessed"]

    vid = v["id"]
    for to in ("staging", "blessed"):
        r = platform.call("POST", f"/node_module_versions/{vid}/promote", json={"to": to})
        assert r.status_code == 200, r.text


def test_ingest_verifies_keyless_evidence_by_identity(
    platform: Platform, oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    """A keyless module: artifact and provenance signed by CI certificates; one by another
    identity is stored unverified."""
    ca = FakeCA()
    now = datetime.now(UTC)
    hour = timedelta(hours=1)

    def signer(uri: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        key = generate_private_key()
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, pem(ca.leaf(key, uri=uri, not_before=now - hour, not_after=now + hour))

    name = f"kl-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "category_slug": "userland",
        "cosign_identity_regexp": r"https://github\.com/acme/.*",
        "cosign_issuer_regexp": r"https://token\.actions\.githubusercontent\.com",
    }
    assert platform.call("POST", "/node_modules", json=body).status_code == 201
    repo = f"default/modules/{name}"
    out = make_artifact(tmp_path / "out", small_files(), name=name, version="0.1.0")
    config = json.loads((out / "module.json").read_bytes())
    config["manifest"] = {"name": name, "schema_version": 1}
    (out / "module.json").write_bytes(canonical_json(config))
    (out / "manifest.json").write_bytes(canonical_json(config["manifest"]))
    key, cert = signer(WORKFLOW)
    with DistributionRegistry(oci_registry.url) as reg:
        ref = parse_reference(f"{repo}:v0.1.0")
        digest = push_artifact(reg, ref, out)
        sign_artifact(reg, ref, key, certificate_pem=cert, chain_pem=ca.chain_pem)
        for k, c in (signer(WORKFLOW), signer("https://github.com/mallory/x@refs/heads/m")):
            env = dsse.parse(json.dumps(fx.provenance_envelope(k, digest=str(digest))))
            refs.attach(
                reg,
                repo,
                digest,
                artifact_type=refs.PROVENANCE_TYPE,
                layer_media_type=refs.DSSE_LAYER,
                layer=env.to_bytes(),
                annotations={
                    attest.CERT_ANNOTATION: c.decode(),
                    attest.CHAIN_ANNOTATION: ca.chain_pem.decode(),
                },
            )
    source = PublishArtifactSource(
        oci_registry.url, ca.root_pem, lambda: datetime.now(UTC), UnsafeValidityAtNow()
    )
    report = IngestWorker(platform.app.state.platform.sessions, source).run_once()
    assert report.built == 1, report
    [v] = platform.call("GET", f"/node_modules/{name}/versions", role="read").json()["versions"]
    got = platform.call("GET", f"/node_module_versions/{v['id']}/evidence", role="read").json()
    provs = sorted(
        (e for e in got["evidence"] if e["kind"] == "provenance"), key=lambda e: e["verified"]
    )
    assert [p["verified"] for p in provs] == [False, True]
    assert "mallory" in provs[0]["problem"]
    assert provs[1]["summary"]["identity"] == WORKFLOW
