"""The ingest queue: tags of a module on their way to NodeModuleVersion rows.

A tag is queued by a webhook (gitea/github), by an operator, or by the
registry poller when it sees a tag it does not know. The worker
(``powernode.platform.worker``) verifies each queued tag through an
:class:`~powernode.platform.services.artifacts.ArtifactSource` and records
the outcome here: :func:`record_built` (the version, in ``built``) or
:func:`record_rejected` (the reason; never a version). Only SemVer tags are
versions (seed 004 tags ``v0.1.0``); cosign's ``sha256-<hex>.sig`` tags and
other names are not ingested.

Where the module's artifacts live: ``<account>/modules/<name>`` in the
platform's registry (seed 004: ``registry.example.com/<account>/modules/…``).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from sqlalchemy import select

from powernode.core.manifest import Manifest
from powernode.core.semver import Version
from powernode.errors import DataError, VersionError
from powernode.platform.db import (
    FleetEvent,
    IngestState,
    ModuleIngest,
    NodeModule,
    NodeModuleVersion,
)
from powernode.platform.problems import ConflictError, InvalidInputError
from powernode.platform.services import audit, catalog, evidence
from powernode.platform.services.artifacts import IngestedArtifact, ModuleTrust
from powernode.platform.services.context import WRITE, Actor, Ctx

log = logging.getLogger(__name__)

# OCI distribution spec: a tag is [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
MAX_LIST = 1000
MAX_REASON = 4000
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
S = IngestState


def module_repository(module: NodeModule) -> str:
    """The registry repository of the module's artifacts."""
    return f"{module.account}/modules/{module.name}"


def trust_of(module: NodeModule) -> ModuleTrust:
    return ModuleTrust(
        identity_regexp=module.cosign_identity_regexp,
        issuer_regexp=module.cosign_issuer_regexp,
        public_key_pem=module.cosign_public_key,
    )


def tag_version(tag: str) -> Version | None:
    """The SemVer version a tag names (``v0.1.0`` → 0.1.0), or None for other tags."""
    if not TAG.match(tag):
        return None
    try:
        return Version.parse(tag)
    except VersionError:
        return None


def worker_actor(account: str, name: str = "ingest-worker") -> Actor:
    return Actor(name=name, token_id=None, scopes=frozenset({WRITE}), account=account)


def queue_ingest(ctx: Ctx, module: NodeModule, tag: str, source: str) -> ModuleIngest:
    """Queue ``tag`` of ``module``; a rejected or failed one is queued again (a retry).

    Idempotent for a tag that is queued, running or built: that row is returned.
    """
    ctx.actor.require(WRITE, "queueing an ingest")
    if tag_version(tag) is None:
        raise InvalidInputError(
            f"tag {tag!r} is not a SemVer version (like v1.2.3 or 1.2.3); "
            "only version tags become module versions",
            field="tag",
        )
    job = ctx.session.scalar(
        select(ModuleIngest).where(ModuleIngest.module_id == module.id, ModuleIngest.tag == tag)
    )
    if job is not None and job.state in {S.QUEUED, S.RUNNING, S.BUILT}:
        return job
    if job is None:
        job = ModuleIngest(
            module=module,
            tag=tag,
            source=source,
            state=S.QUEUED.value,
            reason="",
            attempts=0,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
        ctx.session.add(job)
    else:
        job.state, job.reason, job.attempts = S.QUEUED.value, "", 0
        job.source, job.updated_at = source, ctx.now
    ctx.session.flush()
    audit.record(
        ctx,
        action="module_ingest.queue",
        target_type="module_ingest",
        target_id=job.id,
        summary=f"queued ingest of {module.name}:{tag} ({source})",
        detail={"module": module.name, "tag": tag, "source": source},
    )
    return job


def queue_by_name(ctx: Ctx, module_name: str, tag: str) -> ModuleIngest:
    """An operator queues (or retries) one tag: ``powernode system ingest-module-version``."""
    return queue_ingest(ctx, catalog.get_module(ctx, module_name), tag, "operator")


def list_ingests(ctx: Ctx, module_name: str, limit: int = 100) -> list[ModuleIngest]:
    """Newest first."""
    module = catalog.get_module(ctx, module_name)
    q = (
        select(ModuleIngest)
        .where(ModuleIngest.module_id == module.id)
        .order_by(ModuleIngest.created_at.desc(), ModuleIngest.tag)
        .limit(min(limit, MAX_LIST))
    )
    return list(ctx.session.scalars(q))


def known_tags(ctx: Ctx, module: NodeModule) -> set[str]:
    """Tags with an ingest row, plus the versions registered another way."""
    tags = set(ctx.session.scalars(select(ModuleIngest.tag).where(ModuleIngest.module == module)))
    versions = ctx.session.scalars(
        select(NodeModuleVersion.version_string).where(NodeModuleVersion.module_id == module.id)
    )
    return tags | set(versions)


def check_artifact(module: NodeModule, tag: str, art: IngestedArtifact) -> Manifest:
    """Pure checks of a verified artifact against the tag it was found under; DataError."""
    where = f"{module_repository(module)}:{tag}"
    if art.name != module.name:
        raise DataError(
            f"{where}: the artifact is module {art.name!r}, not {module.name!r}; "
            "push each module to its own repository"
        )
    try:
        same = Version.parse(art.version) == tag_version(tag)
    except VersionError as e:
        raise DataError(f"{where}: the artifact's version: {e}") from e
    if not same:
        raise DataError(f"{where}: the artifact says version {art.version}, the tag {tag}")
    if not _DIGEST.match(art.composefs_digest):
        raise DataError(
            f"{where}: composefs_digest {art.composefs_digest!r} is not sha256:<64 hex>"
        )
    if len(art.file_list) > catalog.MAX_FILE_LIST:
        raise DataError(
            f"{where}: {len(art.file_list)} files; the limit is {catalog.MAX_FILE_LIST}"
        )
    return Manifest.from_dict(art.manifest, source=f"{where} manifest.json")


def record_built(ctx: Ctx, job: ModuleIngest, art: IngestedArtifact) -> NodeModuleVersion:
    """The verified artifact becomes a version in ``built``; DataError if it cannot."""
    module = job.module
    manifest = check_artifact(module, job.tag, art)
    version_string = str(tag_version(job.tag))
    existing = ctx.session.scalar(
        select(NodeModuleVersion).where(
            NodeModuleVersion.module_id == module.id,
            NodeModuleVersion.version_string == version_string,
        )
    )
    verified = catalog.VerifiedFields(
        composefs_digest=art.composefs_digest,
        artifact_ref=art.artifact_ref,
        fsverity_root_hash=art.fsverity_root_hash,
        sbom_ref=art.sbom_ref,
    )
    if existing is not None and existing.composefs_digest is None:
        # Announced by hand (no artifact): the verified artifact completes it.
        version = catalog.attach_verified(
            ctx, existing, verified, manifest.to_dict(), list(art.file_list)
        )
    elif existing is not None:
        if existing.composefs_digest != art.composefs_digest:
            raise DataError(
                f"{module.name} {version_string} is registered already with composefs digest "
                f"{existing.composefs_digest}, the registry now has {art.composefs_digest}; "
                "versions are immutable, publish a new version"
            )
        version = existing
    else:
        try:
            version = catalog.record_ingested_version(
                ctx,
                module.name,
                version_string=version_string,
                verified=verified,
                manifest=manifest.to_dict(),
                file_list=list(art.file_list),
            )
        except (ConflictError, InvalidInputError) as e:
            raise DataError(e.detail) from e
    evidence.record_ingest_signature(ctx, version, art)
    evidence.record_registry_evidence(ctx, version, art)
    job.state, job.reason, job.version_id = S.BUILT.value, "", version.id
    job.artifact_ref, job.updated_at = art.artifact_ref, ctx.now
    log.info(
        "ingested %s %s (%s) signed by %s",
        module.name,
        version_string,
        art.artifact_ref,
        art.signer,
    )
    return version


def record_rejected(ctx: Ctx, job: ModuleIngest, reason: str) -> None:
    """Verification failed: keep the reason, warn the fleet, create no version."""
    job.state, job.reason, job.updated_at = S.REJECTED.value, reason[:MAX_REASON], ctx.now
    ctx.session.add(
        FleetEvent(
            kind="module_version.rejected",
            severity="warning",
            payload={"module": job.module.name, "tag": job.tag, "reason": job.reason},
            occurred_at=ctx.now,
        )
    )
    audit.record(
        ctx,
        action="module_ingest.reject",
        target_type="module_ingest",
        target_id=job.id,
        summary=f"rejected {job.module.name}:{job.tag}",
        detail={"module": job.module.name, "tag": job.tag, "reason": job.reason},
    )
    log.warning("rejected %s:%s: %s", job.module.name, job.tag, reason)


def record_failed(ctx: Ctx, job: ModuleIngest, reason: str, now: datetime) -> None:
    """The registry or the platform failed; the worker retries up to its limit."""
    job.state, job.reason, job.updated_at = S.FAILED.value, reason[:MAX_REASON], now
    log.warning(
        "ingest of %s:%s failed (attempt %d): %s", job.module.name, job.tag, job.attempts, reason
    )
