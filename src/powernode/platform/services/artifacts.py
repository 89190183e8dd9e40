"""The seam between ingest and the registry: list a module's tags, verify one.

Ingest needs two things from a registry (seed 003, ``ModuleOciIngestService``):
the tags of a module's repository, and for one tag the artifact *verified*
against the module's trust policy: cosign signature, manifest and composefs
digests (docs/artifact.md, docs/signing.md). :class:`ArtifactSource` is that
seam; ``verify`` returns an :class:`IngestedArtifact` or raises
(``VerificationError`` and other ``DataError``: the tag is rejected for good;
``TransportError``/``ConfigError``: the registry or the platform is at fault,
the ingest is retried). The adapter also reads the manifest's referrers (one
lookup, the referrers tag schema as fallback) and hands the evidence found to
ingest, which verifies and stores it as the evidence API does.

:class:`PublishArtifactSource` is the production adapter over the publishing
package (:func:`powernode.publish.verify.verify_artifact` and
:func:`powernode.oci.registry.open_registry`); it reads the
:class:`~powernode.publish.verify.VerifiedArtifact` by its typed fields. Tests
use an in-memory fake of the protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from powernode.errors import ConfigError, DataError
from powernode.oci.refs import parse_reference
from powernode.platform.services.evidence_trust import KeylessRoots
from powernode.signing.policy import (
    KeylessPolicy,
    PublicKeyPolicy,
    SigningTime,
    TrustPolicy,
    signing_time_from,
)

if TYPE_CHECKING:
    # The registry client and verifier load httpx and the signing stack: imported on
    # the first ingest, not with the app (bench/bench_platform_start.py).
    from powernode.oci.registry import Registry
    from powernode.publish.verify import VerifiedArtifact
    from powernode.supply.attest import FoundEvidence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModuleTrust:
    """The module's trust policy as stored on its row (seed 003: on the row, not the manifest)."""

    identity_regexp: str | None = None
    issuer_regexp: str | None = None
    public_key_pem: str | None = None

    @property
    def configured(self) -> bool:
        return self.public_key_pem is not None or (
            self.identity_regexp is not None and self.issuer_regexp is not None
        )

    def describe(self) -> str:
        if self.public_key_pem is not None:
            return "cosign public key"
        return f"identity {self.identity_regexp!r}, issuer {self.issuer_regexp!r}"


@dataclass(frozen=True)
class IngestedArtifact:
    """What a verified artifact contributes to its NodeModuleVersion row."""

    name: str  # module.json "name"
    version: str  # module.json "version"
    composefs_digest: str
    manifest_digest: str  # the OCI manifest the signature covers
    artifact_ref: str  # registry/repository@sha256:… (pinned)
    manifest: Mapping[str, object]  # the canonical manifest.json dict
    file_list: tuple[str, ...]
    signer: str  # who signed, for the audit log
    fsverity_root_hash: str | None = None
    sbom_ref: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)
    # The verified signer, for promotion policies' signature rule (issue 18).
    signer_key: str | None = None
    signer_identity: str | None = None
    signer_issuer: str | None = None
    # Evidence among the manifest's referrers (not yet verified), what was skipped and
    # why, and the keyless roots to verify it with (issue 18: ingest pulls evidence).
    evidence: tuple[FoundEvidence, ...] = ()
    evidence_skipped: tuple[str, ...] = ()
    keyless: KeylessRoots | None = None


class ArtifactSource(Protocol):
    """Where ingest finds and verifies artifacts."""

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (an empty list when it does not exist yet)."""
        ...

    def verify(self, repository: str, tag: str, trust: ModuleTrust) -> IngestedArtifact:
        """The artifact at ``repository:tag``, verified against ``trust``; raises otherwise."""
        ...


@dataclass
class PublishArtifactSource:
    """The production adapter: ``open_registry`` + ``powernode.publish.verify_artifact``.

    ``roots_pem`` are the certificate roots keyless signatures must chain to
    (the Fulcio root of the CI's Sigstore); key-based policies ignore them.
    """

    registry: str
    roots_pem: bytes | None = None
    clock: Callable[[], datetime] | None = None
    signing_time: SigningTime | None = None

    @classmethod
    def from_settings(
        cls,
        registry: str,
        roots_file: Path | None,
        clock: Callable[[], datetime],
        tlog_keys_file: Path | None = None,
        *,
        insecure_ignore_tlog: bool = False,
    ) -> PublishArtifactSource:
        roots = None
        if roots_file is not None:
            try:
                roots = roots_file.read_bytes()
            except OSError as e:
                raise ConfigError(
                    f"{roots_file}: cannot read the cosign roots file: {e.strerror}"
                ) from e
        return cls(registry, roots, clock, signing_time_from(tlog_keys_file, insecure_ignore_tlog))

    def _open(self) -> Registry:
        from powernode.oci.registry import open_registry  # noqa: PLC0415 - on first use

        return open_registry(self.registry)

    def list_tags(self, repository: str) -> list[str]:
        registry = self._open()
        try:
            return list(registry.list_tags(repository))
        finally:
            _close(registry)

    def _policy(self, trust: ModuleTrust) -> TrustPolicy:
        if trust.public_key_pem is not None:
            return PublicKeyPolicy(trust.public_key_pem.encode())
        if self.roots_pem is None:
            raise ConfigError(
                "keyless trust (identity/issuer regexps) needs the certificate roots: "
                "set cosign_roots_file in the platform settings"
            )
        assert trust.identity_regexp is not None and trust.issuer_regexp is not None
        assert self.clock is not None
        if self.signing_time is None:
            raise ConfigError(
                "keyless trust needs the transparency log's public key to prove when the "
                "module was signed (Fulcio's certificates live 10 minutes): set "
                "cosign_tlog_keys_file in the platform settings, or "
                "cosign_insecure_ignore_tlog = true to check certificates at ingest time"
            )
        return KeylessPolicy(
            self.roots_pem,
            trust.identity_regexp,
            trust.issuer_regexp,
            self.clock(),
            self.signing_time,
        )

    def verify(self, repository: str, tag: str, trust: ModuleTrust) -> IngestedArtifact:
        from powernode.publish.verify import verify_artifact  # noqa: PLC0415 - on first use
        from powernode.supply.attest import collect_evidence  # noqa: PLC0415 - on first use

        ref = parse_reference(f"{repository}:{tag}")
        registry = self._open()
        try:
            verified = verify_artifact(registry, ref, self._policy(trust))
            found, skipped = collect_evidence(registry, repository, verified.manifest_digest)
        finally:
            _close(registry)
        keyless = None
        if self.roots_pem is not None and self.signing_time is not None:
            keyless = KeylessRoots(self.roots_pem, self.signing_time)
        return replace(
            self._ingested(verified, repository),
            evidence=tuple(found),
            evidence_skipped=tuple(skipped),
            keyless=keyless,
        )

    def _ingested(self, verified: VerifiedArtifact, repository: str) -> IngestedArtifact:
        if not isinstance(verified.config.get("manifest"), dict):
            raise DataError(f"{repository}: the verified artifact carries no manifest.json")
        return IngestedArtifact(
            name=verified.name,
            version=verified.version,
            composefs_digest=str(verified.composefs_digest),
            manifest_digest=str(verified.manifest_digest),
            artifact_ref=str(verified.reference),
            manifest=verified.manifest,
            file_list=verified.file_list,
            signer=str(verified.signer),
            sbom_ref=str(verified.sbom_digest),
            signer_key=verified.signer.key_fingerprint,
            signer_identity=verified.signer.identity,
            signer_issuer=verified.signer.issuer,
        )


def _close(registry: Registry) -> None:
    """Close a distribution registry's connections (an OCI layout holds none)."""
    from powernode.oci.distribution import DistributionRegistry  # noqa: PLC0415

    if isinstance(registry, DistributionRegistry):
        registry.close()
