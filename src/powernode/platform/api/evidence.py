"""Supply-chain evidence, promotion policies and the vulnerability feed (issue 18).

- ``GET/POST /node_module_versions/{id}/evidence``: a version's evidence,
  findings and the policy's verdict for each state; attach an SBOM,
  provenance, VEX or signature.
- ``GET/PUT /node_modules/{name}/promotion_policy`` and
  ``/node_module_categories/{slug}/promotion_policy``.
- ``POST /vulnerability_feeds``: import OSV records inline, or from an URL
  under a prefix the settings allow (``vulnerability_feed_urls``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, status
from pydantic import ConfigDict, Field

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas import In
from powernode.platform.problems import NotFoundError
from powernode.platform.services import evidence, promotion_policies, vulns
from powernode.platform.services.evidence_trust import keyless_roots
from powernode.supply.policy import Policy

router = APIRouter(tags=["supply-chain"])
Doc = dict[str, object]


class SbomIn(In):
    kind: Literal["sbom"]
    document: Doc  # CycloneDX JSON


class _Keyless(In):
    """Signed keylessly: the signing certificate, its chain (PEM) and cosign's bundle."""

    certificate: str | None = Field(default=None, max_length=16384)
    chain: str | None = Field(default=None, max_length=65536)
    bundle: str | None = Field(default=None, max_length=65536)


class EnvelopeIn(_Keyless):
    kind: Literal["provenance", "vex"]
    envelope: Doc  # a DSSE envelope


class SignatureIn(_Keyless):
    kind: Literal["signature"]
    payload: str = Field(max_length=65536)  # cosign simple-signing payload, base64
    signature: str = Field(max_length=4096)  # base64


EvidenceIn = Annotated[SbomIn | EnvelopeIn | SignatureIn, Field(discriminator="kind")]


class PolicyIn(In):
    policy: Policy


class _Open(In):
    model_config = ConfigDict(extra="allow")


class OsvPackageIn(_Open):
    ecosystem: str = Field(max_length=128)
    name: str = Field(max_length=255)


class OsvAffectedIn(_Open):
    package: OsvPackageIn


class OsvRecordIn(_Open):
    """An OSV record (https://ossf.github.io/osv-schema/); fields beyond these are kept."""

    id: str = Field(min_length=1, max_length=128)
    modified: str = Field(max_length=40)
    # Bounds a request one over them still fits under max_body_bytes (1 MiB by default).
    affected: list[OsvAffectedIn] = Field(default_factory=list, max_length=1_000)


class FeedRecordsIn(In):
    records: list[OsvRecordIn] = Field(max_length=10_000)
    source: str = Field(default="inline", max_length=256)


class FeedUrlIn(In):
    url: str = Field(max_length=2048, pattern=r"^https?://[^\s]+$")


@router.get("/node_module_versions/{version_id}/evidence")
def get_evidence(version_id: str, state: State, actor: Reader) -> dict[str, object]:
    """Evidence, findings (VEX applied) and the policy verdict for staging, blessed, live."""
    with state.unit(actor, write=False) as ctx:
        return evidence.describe(ctx, version_id)


@router.post("/node_module_versions/{version_id}/evidence", status_code=status.HTTP_201_CREATED)
def attach_evidence(
    version_id: str, body: EvidenceIn, state: State, actor: CurrentActor
) -> dict[str, object]:
    dumped = body.model_dump(exclude={"kind"})
    fields = {k: v for k, v in dumped.items() if v is not None}  # the documents keep their nulls
    s = state.settings
    keyless = keyless_roots(
        s.cosign_roots_file, s.cosign_tlog_keys_file, s.cosign_insecure_ignore_tlog
    )
    with state.unit(actor) as ctx:
        row = evidence.attach(ctx, version_id, body.kind, fields, keyless)
        return {
            "evidence": {
                "id": row.id,
                "kind": row.kind,
                "digest": row.digest,
                "verified": row.verified,
                "signer": row.signer,
                "problem": row.problem,
                "summary": row.summary,
            }
        }


def _policy_routes(scope: Literal["module", "category"], path: str) -> None:
    @router.get(path, name=f"get_{scope}_policy")
    def get_policy(name: str, state: State, actor: Reader) -> dict[str, object]:
        with state.unit(actor, write=False) as ctx:
            found = promotion_policies.get_policy(ctx, scope, name)
        if found is None:
            raise NotFoundError(f"{scope} {name} has no promotion policy")
        return found

    @router.put(path, name=f"put_{scope}_policy")
    def put_policy(
        name: str, body: PolicyIn, state: State, actor: CurrentActor
    ) -> dict[str, object]:
        with state.unit(actor) as ctx:
            return promotion_policies.set_policy(
                ctx, scope, name, body.policy.model_dump(exclude_none=True)
            )


_policy_routes("module", "/node_modules/{name}/promotion_policy")
_policy_routes("category", "/node_module_categories/{name}/promotion_policy")


@router.post("/vulnerability_feeds")
def import_feed(
    body: FeedRecordsIn | FeedUrlIn, state: State, actor: CurrentActor
) -> dict[str, object]:
    """Import OSV records (inline, or fetched from an allowed ``url``); re-match versions."""
    with state.unit(actor) as ctx:
        if isinstance(body, FeedUrlIn):
            allowed = state.settings.vulnerability_feed_urls
            return {"import": vulns.import_url(ctx, body.url, allowed)}
        docs = [r.model_dump() for r in body.records]
        return {"import": vulns.import_documents(ctx, docs, source=body.source)}
