"""A version's supply-chain evidence, its promotion policy and the policy's verdict.

Evidence (SBOM, provenance, VEX, signatures) is attached to a version and
verified once, on attach, against the module's trust (its cosign public key,
or its keyless identity and issuer: services/evidence_trust.py):
what verification found is stored with it (``verified``, ``signer``,
``problem``), so an unsigned or tampered attestation is kept as what it is
and a verdict can say why it does not count. Findings come from
services/vulns.py; VEX statements that verified are applied to them here.

:func:`check_promotion` runs inside promotion's transaction, before its
compare-and-set (services/promotion.py): a refused promotion raises
:class:`PolicyRefusedError` (409) carrying the verdict, and the transaction
rolls back, so nothing changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Final
from urllib.parse import unquote

from sqlalchemy import select

from powernode.errors import VerificationError
from powernode.platform.db import (
    NodeModule,
    NodeModuleVersion,
    VersionEvidence,
    VersionFinding,
)
from powernode.platform.problems import ConflictError, InvalidInputError
from powernode.platform.services import audit
from powernode.platform.services.artifacts import IngestedArtifact
from powernode.platform.services.catalog import get_version
from powernode.platform.services.context import WRITE, Ctx
from powernode.platform.services.evidence_trust import KeylessRoots, module_trust
from powernode.platform.services.promotion_policies import policy_for
from powernode.signing.errors import KeyFormatError
from powernode.signing.keys import key_fingerprint, load_public_key
from powernode.signing.policy import SignatureCandidate, Signer, TrustPolicy
from powernode.supply import dsse, provenance, vex
from powernode.supply import policy as pol
from powernode.supply.sbom_read import SbomError, packages_of

log = logging.getLogger(__name__)

KINDS: Final = ("sbom", "provenance", "vex", "signature")
MEDIA: Final = {
    "sbom": "application/vnd.cyclonedx+json",
    "provenance": dsse.ENVELOPE_MEDIA_TYPE,
    "vex": dsse.ENVELOPE_MEDIA_TYPE,
    "signature": "application/vnd.dev.cosign.simplesigning.v1+json",
}
MAX_EVIDENCE_BYTES = 8 * 1024 * 1024


class PolicyRefusedError(ConflictError):
    slug = "policy-refused"
    title = "Promotion refused by policy"


# Evidence.


def subject_digest(version: NodeModuleVersion) -> str | None:
    """The version's artifact manifest digest (what attestations name as subject)."""
    ref = version.artifact_ref or ""
    if "@sha256:" in ref:
        return "sha256:" + ref.rsplit("@sha256:", 1)[1]
    return None


def _module_key(module: NodeModule) -> str | None:
    """The fingerprint of the module's key (what ingest verified with), if it has one."""
    if not module.cosign_public_key:
        return None
    try:
        return key_fingerprint(load_public_key(module.cosign_public_key.encode()))
    except KeyFormatError:
        return None


def attach(
    ctx: Ctx,
    version_id: str,
    kind: str,
    body: dict[str, object],
    keyless: KeylessRoots | None = None,
) -> VersionEvidence:
    """Verify and store one piece of evidence; 422 when it cannot be read at all.

    ``keyless``: the platform's roots, for a module whose trust is keyless
    (the envelope's or signature's ``certificate``, ``chain`` and ``bundle``).
    """
    ctx.actor.require(WRITE, "attaching evidence to a version")
    return store(ctx, get_version(ctx, version_id), kind, body, keyless)


def store(
    ctx: Ctx,
    version: NodeModuleVersion,
    kind: str,
    body: dict[str, object],
    keyless: KeylessRoots | None,
    *,
    source: str = "api",
) -> VersionEvidence:
    """Verify and store ``body`` on ``version`` (the API's and ingest's common path)."""
    if kind not in KINDS:
        raise InvalidInputError(f"kind {kind!r} is not one of {', '.join(KINDS)}", field="kind")
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if len(raw) > MAX_EVIDENCE_BYTES:
        raise InvalidInputError(f"evidence is over {MAX_EVIDENCE_BYTES} bytes", field="document")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    old = ctx.session.scalar(
        select(VersionEvidence).where(
            VersionEvidence.version_id == version.id, VersionEvidence.digest == digest
        )
    )
    if old is not None:
        return old
    trust = _Trust(version.module, keyless, ctx.now)
    verified, signer, problem, summary = _examine(version, kind, body, trust)
    row = VersionEvidence(
        version_id=version.id,
        kind=kind,
        digest=digest,
        media_type=MEDIA[kind],
        content=body,
        verified=verified,
        signer=signer,
        problem=problem,
        summary=summary,
        created_at=ctx.now,
    )
    ctx.session.add(row)
    ctx.session.flush()
    audit.record(
        ctx,
        action="module_version.evidence",
        target_type="node_module_version",
        target_id=version.id,
        summary=f"{kind} attached to {version.module.name} {version.version_string}"
        + ("" if verified else f" (not verified: {problem})"),
        detail={
            "evidence_id": row.id,
            "kind": kind,
            "digest": digest,
            "verified": verified,
            "source": source,
        },
    )
    if kind == "sbom":
        from powernode.platform.services import vulns  # noqa: PLC0415 (vulns imports us)

        vulns.rematch_versions(ctx, [version])
    return row


class _Trust:
    """The module's trust policy, built on first use (a module without one fails then)."""

    def __init__(self, module: NodeModule, keyless: KeylessRoots | None, now: datetime) -> None:
        self.module, self.keyless, self.now = module, keyless, now

    def policy(self) -> TrustPolicy:
        return module_trust(self.module, self.keyless, self.now)


def _pem(body: Mapping[str, object], key: str) -> bytes | None:
    value = body.get(key)
    return value.encode() if isinstance(value, str) and value else None


def _signed_summary(signer: Signer) -> dict[str, object]:
    out: dict[str, object] = {"key": signer.key_fingerprint}
    if signer.identity is not None:
        out |= {"identity": signer.identity, "issuer": signer.issuer}
    return out


def _examine(
    version: NodeModuleVersion, kind: str, body: dict[str, object], trust: _Trust
) -> tuple[bool, str | None, str | None, dict[str, object]]:
    """(verified, signer, problem, summary) of one piece of evidence."""
    if kind == "sbom":
        try:
            pkgs, n = packages_of(body.get("document"))
        except SbomError as e:
            raise InvalidInputError(f"document: {e}", field="document") from None
        return True, None, None, {"components": n, "packages": len(pkgs)}
    if kind == "signature":
        return _examine_signature(version, body, trust)
    try:
        env = dsse.parse(body.get("envelope"))
    except dsse.EnvelopeError as e:
        raise InvalidInputError(f"envelope: {e}", field="envelope") from None
    summary: dict[str, object] = {}
    try:
        if kind == "provenance":
            prov = provenance.parse(env)
            summary = {"builder": prov.builder_id, "subject": prov.subject_digest}
        else:
            statements = vex.parse(env.payload_json())
            summary = {"statements": len(statements)}
    except (provenance.ProvenanceError, vex.VexError, dsse.EnvelopeError) as e:
        raise InvalidInputError(f"envelope payload: {e}", field="envelope") from None
    try:
        signer = dsse.verify(
            env,
            trust.policy(),
            certificate_pem=_pem(body, "certificate"),
            chain_pem=_pem(body, "chain"),
            bundle=str(body["bundle"]) if body.get("bundle") else None,
        )
    except VerificationError as e:
        return False, None, str(e), summary
    return True, str(signer), None, summary | _signed_summary(signer)


def _examine_signature(
    version: NodeModuleVersion, body: dict[str, object], trust: _Trust
) -> tuple[bool, str | None, str | None, dict[str, object]]:
    try:
        payload = base64.b64decode(str(body.get("payload", "")), validate=True)
        sig = base64.b64decode(str(body.get("signature", "")), validate=True)
        doc = json.loads(payload)
        named = doc["critical"]["image"]["docker-manifest-digest"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidInputError(
            "a signature is {payload, signature} in base64, the payload cosign's "
            "simple-signing JSON",
            field="payload",
        ) from None
    summary = {"subject": named}
    if named != subject_digest(version):
        return False, None, f"signs {named}, not {subject_digest(version)}", summary
    try:
        signer = trust.policy().verify(
            SignatureCandidate(
                "signature",
                payload,
                sig,
                _pem(body, "certificate"),
                _pem(body, "chain"),
                str(body["bundle"]) if body.get("bundle") else None,
            )
        )
    except VerificationError as e:
        return False, None, str(e), summary
    return True, str(signer), None, summary | _signed_summary(signer)


def record_ingest_signature(ctx: Ctx, version: NodeModuleVersion, art: IngestedArtifact) -> None:
    """Keep who signed the artifact ingest verified, for the policy's signature rule."""
    content = {
        "source": "ingest",
        "artifact_ref": art.artifact_ref,
        "subject": art.manifest_digest,
        "signer": art.signer,
    }
    raw = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    found = ctx.session.scalar(
        select(VersionEvidence.id).where(
            VersionEvidence.version_id == version.id, VersionEvidence.digest == digest
        )
    )
    if found is not None:
        return
    ctx.session.add(
        VersionEvidence(
            version_id=version.id,
            kind="signature",
            digest=digest,
            media_type=MEDIA["signature"],
            content=content,
            verified=True,
            signer=art.signer or None,
            summary={
                "source": "ingest",
                "subject": art.manifest_digest,
                "key": art.signer_key,
                "identity": art.signer_identity,
                "issuer": art.signer_issuer,
            },
            created_at=ctx.now,
        )
    )


def record_registry_evidence(ctx: Ctx, version: NodeModuleVersion, art: IngestedArtifact) -> None:
    """Verify and store the evidence ingest found among the artifact's referrers.

    The same path as the API's: a tampered or foreign-signed attestation is
    stored unverified with its reason; one that cannot be read at all is
    skipped and logged (it changes nothing).
    """
    for found in art.evidence:
        try:
            store(ctx, version, found.kind, found.body, art.keyless, source="registry")
        except InvalidInputError as e:
            log.warning("%s: %s skipped: %s", version.artifact_ref, found.source, e.detail)
    for reason in art.evidence_skipped:
        log.info("%s: %s", version.artifact_ref, reason)


def view(ctx: Ctx, version: NodeModuleVersion) -> pol.Evidence:
    """What the policy sees for ``version``: evidence rows, findings with VEX applied."""
    rows = list(
        ctx.session.scalars(
            select(VersionEvidence)
            .where(VersionEvidence.version_id == version.id)
            .order_by(VersionEvidence.created_at, VersionEvidence.id)
        )
    )
    subject = subject_digest(version)
    sigs: list[pol.SignatureSeen] = []
    if version.cosign_verified and not any(
        r.kind == "signature" and r.summary.get("source") == "ingest" for r in rows
    ):  # verified by an ingest before issue 18 recorded the signer
        sigs.append(pol.SignatureSeen("ingest", True, _module_key(version.module)))
    provs: list[pol.ProvenanceSeen] = []
    sboms: list[pol.SbomSeen] = []
    statements: list[tuple[str, vex.Statement]] = []
    for r in rows:
        s = r.summary
        if r.kind == "signature":
            sigs.append(
                pol.SignatureSeen(
                    r.id,
                    r.verified,
                    _text(s, "key"),
                    _text(s, "identity"),
                    _text(s, "issuer"),
                    r.problem,
                )
            )
        elif r.kind == "provenance":
            provs.append(
                pol.ProvenanceSeen(
                    r.id, r.verified, r.signer, _text(s, "builder"), _text(s, "subject"), r.problem
                )
            )
        elif r.kind == "sbom":
            sboms.append(pol.SbomSeen(r.id, r.digest, int(str(s.get("components", 0)))))
        elif r.kind == "vex" and r.verified:
            env = dsse.parse(r.content.get("envelope"))
            statements.extend((r.id, st) for st in vex.parse(env.payload_json()))
    findings = []
    for f in ctx.session.scalars(
        select(VersionFinding)
        .where(VersionFinding.version_id == version.id)
        .order_by(VersionFinding.osv_id, VersionFinding.package)
    ):
        decided = _decide(statements, f, subject)
        findings.append(
            pol.FindingSeen(
                f.osv_id,
                f.package,
                f.installed_version,
                f.severity,
                waived_by=decided,
                vex_status=decided.split(" ", 1)[0] if decided else None,
            )
        )
    return pol.Evidence(subject, tuple(sigs), tuple(provs), tuple(sboms), tuple(findings))


def _decide(
    statements: list[tuple[str, vex.Statement]], f: VersionFinding, subject: str | None
) -> str | None:
    ids = {f.osv_id, *f.aliases}
    subject_ids = {
        p for _, st in statements for p in st.products if subject and subject in unquote(p)
    }
    best = vex.decide(
        [st for _, st in statements], vuln_ids=ids, subject_ids=subject_ids, package_purl=f.purl
    )
    if best is None:
        return None
    src = next(eid for eid, st in statements if st is best)
    if best.status not in vex.WAIVING:
        return None
    return f"{best.status} ({best.justification or best.note}) in VEX {src}"


def verdict(ctx: Ctx, version: NodeModuleVersion, target: str) -> pol.Verdict:
    policy, source = policy_for(ctx, version.module)
    return pol.evaluate(policy, source, target, view(ctx, version))


def check_promotion(ctx: Ctx, version: NodeModuleVersion, target: str) -> pol.Verdict:
    """The verdict for moving ``version`` to ``target``; PolicyRefusedError when it fails."""
    v = verdict(ctx, version, target)
    if not v.allowed:
        failed = "; ".join(f"{r.rule}: {r.reason}" for r in v.failures())
        raise PolicyRefusedError(
            f"{version.module.name} {version.version_string} cannot move to {target}: "
            f"the {v.policy_source} policy refuses it. {failed}",
            verdict=v.to_json(),
        )
    return v


def describe(ctx: Ctx, version_id: str) -> dict[str, object]:
    """Evidence, findings and the verdict for each state the policy names (the API's answer)."""
    version = get_version(ctx, version_id)
    rows = ctx.session.scalars(
        select(VersionEvidence)
        .where(VersionEvidence.version_id == version.id)
        .order_by(VersionEvidence.created_at, VersionEvidence.id)
    )
    ev = view(ctx, version)
    policy, source = policy_for(ctx, version.module)
    return {
        "version_id": version.id,
        "module": version.module.name,
        "version_string": version.version_string,
        "promotion_state": version.promotion_state,
        "subject": ev.subject_digest,
        "policy": source,
        "evidence": [
            {
                "id": r.id,
                "kind": r.kind,
                "digest": r.digest,
                "media_type": r.media_type,
                "verified": r.verified,
                "signer": r.signer,
                "problem": r.problem,
                "summary": r.summary,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ],
        "findings": [
            {
                "osv_id": f.osv_id,
                "package": f.package,
                "version": f.version,
                "severity": f.severity,
                "waived_by": f.waived_by,
            }
            for f in ev.findings
        ],
        "verdicts": {t: pol.evaluate(policy, source, t, ev).to_json() for t in pol.TARGETS},
    }


def _text(summary: Mapping[str, object], key: str) -> str | None:
    """A text field of a stored evidence summary (JSON), or None."""
    value = summary.get(key)
    return None if value is None else str(value)
