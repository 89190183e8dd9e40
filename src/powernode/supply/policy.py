"""Promotion policies: declarative rules per target state, and their pure evaluation.

A policy (YAML or JSON, per module or per category) maps a target state to
the evidence a version needs to enter it::

    blessed:
      signature: {identity: "^https://ci\\.example/.*$", issuer: "^https://issuer$"}
      provenance: {builders: ["https://ci.example/builders/module@v1"]}
      sbom: {}
      vulnerabilities: {block: [critical, high], vex_waives: true}
    live:
      signature: {key: "sha256:…"}

:func:`evaluate` answers with every rule of the target, pass or fail, the
reason and the evidence it looked at. Unknown keys are refused (a typo must
not silently drop a rule).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from powernode.errors import DataError
from powernode.platform.api.patterns import JSON_INTEGER

Severity = Literal["critical", "high", "medium", "low", "unknown"]
TARGETS = ("staging", "blessed", "live")
MAX_POLICY = 64 * 1024


class PolicyError(DataError, ValueError):
    """The policy document is not valid; the message names the field."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignatureRule(_Rule):
    """A verified signature (cosign's, from ingest or attached) by a matching signer."""

    identity: str | None = Field(  # regexp, keyless identity
        default=None, max_length=1024, json_schema_extra={"format": "regex"}
    )
    issuer: str | None = Field(  # regexp, keyless issuer
        default=None, max_length=1024, json_schema_extra={"format": "regex"}
    )
    key: str | None = Field(default=None, max_length=200)  # a key fingerprint

    @field_validator("identity", "issuer")
    @classmethod
    def _regexp(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from None
        return v


class ProvenanceRule(_Rule):
    """Signed SLSA provenance for this version's digest from one of ``builders``."""

    builders: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        min_length=1, max_length=32
    )


class SbomRule(_Rule):
    min_components: Annotated[int, Field(ge=0, le=1_000_000), JSON_INTEGER] = 1


def _default_block() -> list[Severity]:
    return ["critical", "high"]


class VulnerabilityRule(_Rule):
    block: list[Severity] = Field(default_factory=_default_block)
    vex_waives: StrictBool = True


class StateRules(_Rule):
    signature: SignatureRule | None = None
    provenance: ProvenanceRule | None = None
    sbom: SbomRule | None = None
    vulnerabilities: VulnerabilityRule | None = None


class Policy(_Rule):
    staging: StateRules | None = None
    blessed: StateRules | None = None
    live: StateRules | None = None

    def rules_for(self, target: str) -> StateRules | None:
        return getattr(self, target, None) if target in TARGETS else None


def load(document: object) -> Policy:
    """A :class:`Policy` from YAML/JSON text or a parsed mapping; PolicyError if invalid."""
    if isinstance(document, bytes | str):
        if len(document) > MAX_POLICY:
            raise PolicyError(f"the policy is over {MAX_POLICY} bytes")
        try:
            document = yaml.safe_load(document)
        except yaml.YAMLError as e:
            raise PolicyError(f"the policy is not YAML or JSON: {e}") from None
    if not isinstance(document, dict):
        raise PolicyError("a policy is a mapping of target states (staging, blessed, live)")
    try:
        return Policy.model_validate(document)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"policy {where}: {first['msg']}") from None


# What the evaluation sees (built by platform/services/evidence.py).


@dataclass(frozen=True)
class SignatureSeen:
    source: str  # "ingest" or an evidence id
    verified: bool
    key_fingerprint: str | None = None
    identity: str | None = None
    issuer: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class ProvenanceSeen:
    evidence_id: str
    verified: bool
    signer: str | None
    builder_id: str | None
    subject_digest: str | None
    problem: str | None = None


@dataclass(frozen=True)
class SbomSeen:
    evidence_id: str
    digest: str
    components: int


@dataclass(frozen=True)
class FindingSeen:
    osv_id: str
    package: str
    version: str
    severity: str
    waived_by: str | None = None  # "not_affected (vulnerable_code_not_present) in <vex id>"
    vex_status: str | None = None


@dataclass(frozen=True)
class Evidence:
    subject_digest: str | None
    signatures: tuple[SignatureSeen, ...] = ()
    provenance: tuple[ProvenanceSeen, ...] = ()
    sboms: tuple[SbomSeen, ...] = ()
    findings: tuple[FindingSeen, ...] = ()


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    reason: str
    evidence: Sequence[Mapping[str, object]] = field(default_factory=list)  # JSON for the answer


@dataclass(frozen=True)
class Verdict:
    target: str
    policy_source: str | None  # "module my-redis", "category userland", None
    rules: tuple[RuleResult, ...]

    @property
    def allowed(self) -> bool:
        return all(r.passed for r in self.rules)

    def failures(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "policy": self.policy_source,
            "allowed": self.allowed,
            "rules": [
                {"rule": r.rule, "passed": r.passed, "reason": r.reason, "evidence": r.evidence}
                for r in self.rules
            ],
        }


def evaluate(policy: Policy | None, source: str | None, target: str, ev: Evidence) -> Verdict:
    rules = policy.rules_for(target) if policy is not None else None
    out: list[RuleResult] = []
    if rules is not None:
        if rules.signature is not None:
            out.append(_signature(rules.signature, ev))
        if rules.provenance is not None:
            out.append(_provenance(rules.provenance, ev))
        if rules.sbom is not None:
            out.append(_sbom(rules.sbom, ev))
        if rules.vulnerabilities is not None:
            out.append(_vulns(rules.vulnerabilities, ev))
    return Verdict(target, source if rules is not None else None, tuple(out))


def _signature(rule: SignatureRule, ev: Evidence) -> RuleResult:
    seen = [
        {
            "source": s.source,
            "verified": s.verified,
            "key": s.key_fingerprint,
            "identity": s.identity,
            "issuer": s.issuer,
            "problem": s.problem,
        }
        for s in ev.signatures
    ]
    if not ev.signatures:
        return RuleResult("signature", False, "the version has no signature", seen)
    why: list[str] = []
    for s in ev.signatures:
        if not s.verified:
            why.append(f"{s.source}: not verified ({s.problem})")
            continue
        if rule.key is not None and s.key_fingerprint != rule.key:
            why.append(f"{s.source}: signed by key {s.key_fingerprint}, not {rule.key}")
            continue
        if rule.identity is not None and not (
            s.identity and re.fullmatch(rule.identity, s.identity)
        ):
            why.append(f"{s.source}: identity {s.identity!r} does not match {rule.identity!r}")
            continue
        if rule.issuer is not None and not (s.issuer and re.fullmatch(rule.issuer, s.issuer)):
            why.append(f"{s.source}: issuer {s.issuer!r} does not match {rule.issuer!r}")
            continue
        who = s.identity or f"key {s.key_fingerprint}"
        return RuleResult("signature", True, f"signed by {who} ({s.source})", seen)
    return RuleResult(
        "signature", False, "no signature satisfies the rule: " + "; ".join(why), seen
    )


def _provenance(rule: ProvenanceRule, ev: Evidence) -> RuleResult:
    seen = [
        {
            "evidence_id": p.evidence_id,
            "verified": p.verified,
            "signer": p.signer,
            "builder": p.builder_id,
            "subject": p.subject_digest,
            "problem": p.problem,
        }
        for p in ev.provenance
    ]
    if not ev.provenance:
        return RuleResult("provenance", False, "no provenance is attached", seen)
    why: list[str] = []
    for p in ev.provenance:
        if not p.verified:
            why.append(f"provenance {p.evidence_id} is not signed by a trusted key: {p.problem}")
        elif p.subject_digest != ev.subject_digest:
            why.append(
                f"provenance {p.evidence_id} is for {p.subject_digest}, "
                f"not this version's {ev.subject_digest}"
            )
        elif p.builder_id not in rule.builders:
            why.append(
                f"provenance {p.evidence_id} comes from builder {p.builder_id!r}; the policy "
                f"accepts {', '.join(repr(b) for b in rule.builders)}"
            )
        else:
            return RuleResult(
                "provenance",
                True,
                f"signed provenance from builder {p.builder_id!r} ({p.evidence_id}, {p.signer})",
                seen,
            )
    return RuleResult("provenance", False, "; ".join(why), seen)


def _sbom(rule: SbomRule, ev: Evidence) -> RuleResult:
    seen = [
        {"evidence_id": s.evidence_id, "digest": s.digest, "components": s.components}
        for s in ev.sboms
    ]
    if not ev.sboms:
        return RuleResult("sbom", False, "no SBOM is attached", seen)
    best = max(ev.sboms, key=lambda s: s.components)
    if best.components < rule.min_components:
        return RuleResult(
            "sbom",
            False,
            f"the SBOM lists {best.components} components; the policy asks for "
            f"at least {rule.min_components}",
            seen,
        )
    return RuleResult("sbom", True, f"SBOM {best.evidence_id} ({best.components} components)", seen)


def _vulns(rule: VulnerabilityRule, ev: Evidence) -> RuleResult:
    blocking = [
        f for f in ev.findings if f.severity in rule.block and not (rule.vex_waives and f.waived_by)
    ]
    seen = [
        {
            "osv_id": f.osv_id,
            "package": f.package,
            "version": f.version,
            "severity": f.severity,
            "waived_by": f.waived_by,
            "vex_status": f.vex_status,
            "blocking": f in blocking,
        }
        for f in ev.findings
    ]
    if not ev.sboms:
        return RuleResult(
            "vulnerabilities", False, "no SBOM is attached, so nothing could be matched", seen
        )
    if blocking:
        listed = ", ".join(f"{f.osv_id} ({f.severity}, {f.package} {f.version})" for f in blocking)
        return RuleResult(
            "vulnerabilities",
            False,
            f"{len(blocking)} {'/'.join(rule.block)} finding(s) without a VEX statement "
            f"waiving them: {listed}",
            seen,
        )
    waived = sum(1 for f in ev.findings if f.waived_by)
    return RuleResult(
        "vulnerabilities",
        True,
        f"no unwaived {'/'.join(rule.block)} finding ({len(ev.findings)} findings, "
        f"{waived} waived by VEX)",
        seen,
    )
