"""Registry ingest: the worker polls tags, verifies them through an ArtifactSource, and
records built versions or rejections. A fake source stands in for the registry."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from powernode.errors import DataError, TransportError, VerificationError
from powernode.platform.services import catalog
from powernode.platform.services.artifacts import IngestedArtifact, ModuleTrust
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.worker import IngestWorker, WorkerLimits
from tests.platform.conftest import Platform
from tests.platform.problems import assert_problem

DIGEST = "sha256:" + "ab" * 32
REPO = "default/modules/my-redis"


def public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def artifact(name: str = "my-redis", version: str = "0.1.0", **kw: Any) -> IngestedArtifact:
    values: dict[str, Any] = {
        "name": name,
        "version": version,
        "composefs_digest": DIGEST,
        "manifest_digest": "sha256:" + "cd" * 32,
        "artifact_ref": f"{REPO}@sha256:{'cd' * 32}",
        "manifest": {"schema_version": 1, "name": name, "protected_spec": ["/etc/redis.conf"]},
        "file_list": ("/etc/", "/etc/redis.conf"),
        "signer": "key abc",
    }
    values.update(kw)
    return IngestedArtifact(**values)


@dataclass
class FakeRegistry:
    """Tags per repository; each tag maps to an artifact or the error verify raises."""

    tags: dict[str, dict[str, IngestedArtifact | Exception]] = field(default_factory=dict)
    verified: list[tuple[str, str, ModuleTrust]] = field(default_factory=list)
    list_error: Exception | None = None

    def list_tags(self, repository: str) -> list[str]:
        if self.list_error is not None:
            raise self.list_error
        return list(self.tags.get(repository, {}))

    def verify(self, repository: str, tag: str, trust: ModuleTrust) -> IngestedArtifact:
        self.verified.append((repository, tag, trust))
        got = self.tags[repository][tag]
        if isinstance(got, Exception):
            raise got
        return got


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def clock(fixed_now: datetime) -> list[datetime]:
    return [fixed_now + timedelta(hours=1)]


@pytest.fixture
def worker(platform: Platform, registry: FakeRegistry, clock: list[datetime]) -> IngestWorker:
    ticks = itertools.count()
    return IngestWorker(
        platform.app.state.platform.sessions,
        registry,
        clock=lambda: clock[0] + timedelta(milliseconds=next(ticks)),
        name="test-worker",
        limits=WorkerLimits(max_attempts=2, retry_after=timedelta(minutes=1)),
    )


def create_module(p: Platform, name: str = "my-redis", *, key: bool = True) -> None:
    body: dict[str, Any] = {"name": name, "category_slug": "userland"}
    if key:
        body["cosign_public_key"] = public_key()
    assert p.call("POST", "/node_modules", json=body).status_code == 201


def ingests(p: Platform, module: str = "my-redis") -> list[tuple[str, str, str]]:
    rows = p.call("GET", f"/node_modules/{module}/ingests", role="read").json()["ingests"]
    return sorted((r["tag"], r["state"], r["reason"]) for r in rows)


def versions(p: Platform, module: str = "my-redis") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = p.call("GET", f"/node_modules/{module}/versions").json()["versions"]
    return out


def test_poller_ingests_new_semver_tags_as_built(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    create_module(platform)
    registry.tags[REPO] = {
        "v0.1.0": artifact(),
        "sha256-" + "cd" * 32 + ".sig": artifact(),  # cosign's signature tag: not a version
        "latest": artifact(),
    }
    report = worker.run_once()
    assert (report.queued, report.built, report.rejected, report.failed) == (1, 1, 0, 0)
    [v] = versions(platform)
    assert (v["version_string"], v["promotion_state"], v["cosign_verified"]) == (
        "0.1.0",
        "built",
        True,
    )
    assert v["composefs_digest"] == DIGEST
    assert v["file_count"] == 2
    assert v["artifact_ref"] == f"{REPO}@sha256:{'cd' * 32}"
    assert ingests(platform) == [("v0.1.0", "built", "")]
    # The next round finds nothing new and verifies nothing again.
    assert worker.run_once().queued == 0
    assert len(registry.verified) == 1
    # The stored manifest feeds the composition: protected_spec survives the round trip.
    assert registry.verified[0][2].public_key_pem is not None


def test_wrong_signature_is_rejected_with_the_reason_never_built(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    create_module(platform)
    registry.tags[REPO] = {"v0.2.0": VerificationError("signature 1 of 1: made by another key")}
    report = worker.run_once()
    assert (report.built, report.rejected) == (0, 1)
    assert versions(platform) == []
    [(tag, state, reason)] = ingests(platform)
    assert (tag, state) == ("v0.2.0", "rejected")
    assert "failed verification against cosign public key" in reason
    assert "made by another key" in reason
    events = platform.snapshot()["fleet_events"]
    assert any("module_version.rejected" in row for row in events)
    # Rejected tags are not retried by the poller.
    worker.run_once()
    assert len(registry.verified) == 1


def test_module_without_trust_policy_is_rejected_without_verifying(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    create_module(platform, key=False)
    registry.tags[REPO] = {"1.0.0": artifact(version="1.0.0")}
    worker.run_once()
    [(_tag, state, reason)] = ingests(platform)
    assert state == "rejected"
    assert "has no trust policy" in reason
    assert registry.verified == []


@pytest.mark.parametrize(
    ("art", "fragment"),
    [
        (artifact(name="other"), "the artifact is module 'other', not 'my-redis'"),
        (artifact(version="0.9.0"), "the artifact says version 0.9.0, the tag v0.1.0"),
        (artifact(composefs_digest="md5:1"), "is not sha256:<64 hex>"),
        (artifact(manifest={"name": "my-redis", "mask": 5}), "manifest.json"),
    ],
    ids=["wrong-name", "wrong-version", "bad-digest", "bad-manifest"],
)
def test_verified_but_inconsistent_artifacts_are_rejected(
    platform: Platform,
    registry: FakeRegistry,
    worker: IngestWorker,
    art: IngestedArtifact,
    fragment: str,
) -> None:
    create_module(platform)
    registry.tags[REPO] = {"v0.1.0": art}
    worker.run_once()
    [(_tag, state, reason)] = ingests(platform)
    assert state == "rejected"
    assert fragment in reason
    assert versions(platform) == []
    assert platform.count("node_module_versions") == 0


def test_transport_errors_are_retried_then_left_failed(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker, clock: list[datetime]
) -> None:
    create_module(platform)
    registry.tags[REPO] = {"v0.1.0": TransportError("GET /v2/…: 503")}
    worker.run_once()
    assert ingests(platform) == [("v0.1.0", "failed", f"{REPO}:v0.1.0: GET /v2/…: 503")]
    worker.run_once()  # not due yet (retry_after one minute)
    assert len(registry.verified) == 1
    clock[0] += timedelta(minutes=2)
    registry.tags[REPO]["v0.1.0"] = artifact()
    report = worker.run_once()
    assert report.built == 1
    assert ingests(platform) == [("v0.1.0", "built", "")]


def test_failed_after_max_attempts_stays_failed(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker, clock: list[datetime]
) -> None:
    create_module(platform)
    registry.tags[REPO] = {"v0.1.0": TransportError("down")}
    for _ in range(4):
        worker.run_once()
        clock[0] += timedelta(minutes=2)
    assert len(registry.verified) == 2  # max_attempts
    assert ingests(platform)[0][1] == "failed"


def test_registry_listing_error_skips_the_round_quietly(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    create_module(platform)
    registry.list_error = TransportError("connection refused")
    assert worker.run_once().queued == 0
    assert platform.count("module_ingests") == 0


def test_operator_queue_and_webhook_path_lead_to_the_same_version(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    create_module(platform)
    registry.tags[REPO] = {"v0.1.0": artifact()}
    r = platform.call("POST", "/node_modules/my-redis/ingests", json={"tag": "v0.1.0"})
    assert r.status_code == 202, r.text
    assert (r.json()["ingest"]["source"], r.json()["ingest"]["state"]) == ("operator", "queued")
    # The worker processes the queued tag; the poller sees it is known and adds nothing.
    report = worker.run_once()
    assert (report.queued, report.built) == (0, 1)
    assert [v["version_string"] for v in versions(platform)] == ["0.1.0"]


def test_rejected_tag_can_be_retried_after_fixing_the_policy(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    create_module(platform)
    registry.tags[REPO] = {"v0.1.0": VerificationError("identity mismatch")}
    worker.run_once()
    registry.tags[REPO]["v0.1.0"] = artifact()
    r = platform.call("POST", "/node_modules/my-redis/ingests", json={"tag": "v0.1.0"})
    assert r.json()["ingest"]["state"] == "queued"
    assert worker.run_once().built == 1


def test_two_workers_never_ingest_one_tag_twice(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker, clock: list[datetime]
) -> None:
    create_module(platform)
    registry.tags[REPO] = {"v0.1.0": artifact()}
    other = IngestWorker(
        platform.app.state.platform.sessions, registry, clock=lambda: clock[0], name="other"
    )
    worker.poll()
    first = worker.claim()
    assert other.claim() == []  # already running under the first worker
    assert [worker.process(j) for j in first] == ["built"]


def test_existing_version_with_another_digest_is_rejected(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    create_module(platform)
    with Session(platform.engine) as session:  # ingested before, with other bytes
        ctx = Ctx(session, Actor("ingest", None, frozenset(SCOPES)), datetime.now(UTC))
        other = catalog.VerifiedFields(composefs_digest="sha256:" + "00" * 32, artifact_ref=REPO)
        catalog.record_ingested_version(ctx, "my-redis", version_string="0.1.0", verified=other)
        session.commit()
    registry.tags[REPO] = {"v0.1.0": artifact()}
    platform.call("POST", "/node_modules/my-redis/ingests", json={"tag": "v0.1.0"})
    worker.run_once()
    [(_tag, state, reason)] = ingests(platform)
    assert state == "rejected", reason
    assert "versions are immutable" in reason
    [v] = versions(platform)
    assert v["composefs_digest"] == "sha256:" + "00" * 32


def test_a_version_announced_by_hand_is_completed_by_ingest(
    platform: Platform, registry: FakeRegistry, worker: IngestWorker
) -> None:
    """Issue 13 item 2: the operator API announces a version; only ingest sets its artifact."""
    create_module(platform)
    r = platform.call("POST", "/node_modules/my-redis/versions", json={"version_string": "0.1.0"})
    assert r.status_code == 201, r.text
    v = r.json()["version"]
    assert (v["cosign_verified"], v["composefs_digest"], v["artifact_ref"]) == (False, None, None)
    registry.tags[REPO] = {"v0.1.0": artifact()}
    platform.call("POST", "/node_modules/my-redis/ingests", json={"tag": "v0.1.0"})
    worker.run_once()
    [(_tag, state, reason)] = ingests(platform)
    assert state == "built", reason
    [v] = versions(platform)
    assert (v["cosign_verified"], v["composefs_digest"]) == (True, DIGEST)
    assert v["artifact_ref"] == f"{REPO}@sha256:{'cd' * 32}"


@pytest.mark.parametrize(
    ("path", "body", "role", "status", "fragment"),
    [
        ("/node_modules/nope/ingests", {"tag": "v1.0.0"}, "write", 404, "module 'nope' not found"),
        ("/node_modules/my-redis/ingests", {"tag": "latest"}, "write", 422, "not a SemVer"),
        ("/node_modules/my-redis/ingests", {"tag": ""}, "write", 422, "tag"),
        ("/node_modules/my-redis/ingests", {"tag": "v1", "x": 1}, "write", 422, "x"),
        ("/node_modules/my-redis/ingests", {"tag": "v1.0.0"}, "read", 403, "'write' scope"),
    ],
    ids=["unknown-module", "not-semver", "empty", "extra-field", "read-only-token"],
)
def test_bad_operator_queue_requests_change_nothing(  # noqa: PLR0917
    platform: Platform, path: str, body: dict[str, Any], role: str, status: int, fragment: str
) -> None:
    create_module(platform)
    before = platform.snapshot()
    assert_problem(platform.call("POST", path, role=role, json=body), status, fragment)
    assert platform.snapshot() == before


def test_publish_adapter_maps_a_verified_artifact() -> None:
    from powernode.oci.digest import Digest
    from powernode.oci.refs import parse_reference
    from powernode.platform.services.artifacts import PublishArtifactSource
    from powernode.publish.verify import VerifiedArtifact
    from powernode.signing.policy import Signer

    config: dict[str, object] = {
        "name": "my-redis",
        "version": "0.1.0",
        "manifest": {"name": "my-redis"},
    }
    v = VerifiedArtifact(
        reference=parse_reference(f"{REPO}@sha256:{'cd' * 32}"),
        manifest_digest=Digest.parse("sha256:" + "cd" * 32),
        config=config,
        composefs_digest=Digest.parse(DIGEST),
        signer=Signer("k"),
        file_list=("/etc/",),
        sbom_digest=Digest.parse("sha256:" + "ee" * 32),
    )
    art = PublishArtifactSource("unused")._ingested(v, REPO)
    assert (art.name, art.version, art.manifest) == ("my-redis", "0.1.0", {"name": "my-redis"})
    assert (art.composefs_digest, art.sbom_ref, art.file_list) == (
        DIGEST,
        "sha256:" + "ee" * 32,
        ("/etc/",),
    )
    assert (art.artifact_ref, art.signer) == (f"{REPO}@sha256:{'cd' * 32}", "key k")
    with pytest.raises(DataError, match=r"carries no manifest\.json"):
        PublishArtifactSource("unused")._ingested(
            dataclasses.replace(v, config={"name": "x", "version": "1"}), REPO
        )
