"""Supply-chain evidence, promotion policies and the vulnerability feed (issue 18).

- ``GET/POST /node_module_versions/{id}/evidence``: a version's evidence,
  findings and the policy's verdict for each state; attach an SBOM,
  provenance, VEX or signature.
- ``GET/PUT /node_modules/{name}/promotion_policy`` and
  ``/node_module_categories/{slug}/promotion_policy``.
- ``POST /vulnerability_feeds``: import OSV records inline or from an URL.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import Field, model_validator

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas import In
from powernode.platform.problems import NotFoundError
from powernode.platform.services import evidence, vulns

router = APIRouter(tags=["supply-chain"])


class EvidenceIn(In):
    """One piece of evidence: ``document`` (sbom), ``envelope`` (provenance, vex: DSSE),
    or ``payload`` + ``signature`` (signature: cosign simple signing, base64)."""

    kind: Literal["sbom", "provenance", "vex", "signature"]
    document: dict[str, Any] | None = None  # Any: a CycloneDX JSON document
    envelope: dict[str, Any] | None = None  # Any: a DSSE envelope
    payload: str | None = Field(default=None, max_length=65536)
    signature: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> EvidenceIn:
        need = {
            "sbom": ("document",),
            "provenance": ("envelope",),
            "vex": ("envelope",),
            "signature": ("payload", "signature"),
        }[self.kind]
        for name in need:
            if getattr(self, name) is None:
                raise ValueError(f"{self.kind} evidence needs {name}")
        return self


class PolicyIn(In):
    policy: dict[str, Any]  # Any: the policy document, validated by supply/policy.py


class FeedIn(In):
    url: str | None = Field(default=None, max_length=2048)
    records: list[dict[str, Any]] | None = Field(default=None, max_length=200_000)  # Any: OSV
    source: str = Field(default="inline", max_length=256)

    @model_validator(mode="after")
    def _one(self) -> FeedIn:
        if (self.url is None) == (self.records is None):
            raise ValueError("give either url or records")
        return self


@router.get("/node_module_versions/{version_id}/evidence")
def get_evidence(version_id: str, state: State, actor: Reader) -> dict[str, Any]:
    """Evidence, findings (VEX applied) and the policy verdict for staging, blessed, live."""
    with state.unit(actor, write=False) as ctx:
        return evidence.describe(ctx, version_id)


@router.post("/node_module_versions/{version_id}/evidence", status_code=status.HTTP_201_CREATED)
def attach_evidence(
    version_id: str, body: EvidenceIn, state: State, actor: CurrentActor
) -> dict[str, Any]:
    fields = body.model_dump(exclude_none=True, exclude={"kind"})
    with state.unit(actor) as ctx:
        row = evidence.attach(ctx, version_id, body.kind, fields)
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
    def get_policy(name: str, state: State, actor: Reader) -> dict[str, Any]:
        with state.unit(actor, write=False) as ctx:
            found = evidence.get_policy(ctx, scope, name)
        if found is None:
            raise NotFoundError(f"{scope} {name} has no promotion policy")
        return found

    @router.put(path, name=f"put_{scope}_policy")
    def put_policy(name: str, body: PolicyIn, state: State, actor: CurrentActor) -> dict[str, Any]:
        with state.unit(actor) as ctx:
            return evidence.set_policy(ctx, scope, name, body.policy)


_policy_routes("module", "/node_modules/{name}/promotion_policy")
_policy_routes("category", "/node_module_categories/{name}/promotion_policy")


@router.post("/vulnerability_feeds")
def import_feed(body: FeedIn, state: State, actor: CurrentActor) -> dict[str, Any]:
    """Import OSV records (inline, or fetched from ``url``) and re-match the versions."""
    with state.unit(actor) as ctx:
        if body.url is not None:
            return {"import": vulns.import_url(ctx, body.url)}
        return {"import": vulns.import_documents(ctx, body.records or [], source=body.source)}
