"""in-toto Statement v1 with a SLSA Provenance v1 predicate.

Formats: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
and https://slsa.dev/spec/v1.0/provenance. The statement's ``subject`` is the
module's OCI manifest (``name`` the repository, ``digest.sha256`` its hex);
``buildDefinition.resolvedDependencies`` lists every input with its digest:
the lock file, each Debian package (a purl, with the ``.deb``'s sha256 when
known) and the source tree; ``externalParameters`` holds the build
parameters; ``runDetails.builder.id`` names the builder a policy can require.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from powernode.errors import DataError
from powernode.supply.dsse import Envelope, EnvelopeError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# cosign 2.x still writes the v0.1 statement header (same layout) around any predicate.
ACCEPTED_STATEMENT_TYPES = frozenset({STATEMENT_TYPE, "https://in-toto.io/Statement/v0.1"})
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://powernode.dev/module-build/v1"


class ProvenanceError(DataError, ValueError):
    """The statement is not an in-toto v1 statement with a SLSA v1 predicate."""


@dataclass(frozen=True)
class Dependency:
    uri: str
    digest: Mapping[str, str]  # {"sha256": "<hex>"}
    name: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"uri": self.uri}
        if self.digest:
            out["digest"] = dict(self.digest)
        if self.name:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class Provenance:
    """What a policy looks at in a verified statement."""

    subject_name: str
    subject_digest: str  # "sha256:<hex>"
    builder_id: str
    build_type: str
    dependencies: tuple[Dependency, ...]
    parameters: Mapping[str, object] = field(default_factory=dict)


def statement(
    *,
    subject_name: str,
    subject_digest: str,
    builder_id: str,
    dependencies: Sequence[Dependency],
    parameters: Mapping[str, object],
    invocation_id: str | None = None,
    started_on: str | None = None,
    finished_on: str | None = None,
) -> dict[str, object]:
    algo, _, hexpart = subject_digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        raise ProvenanceError(f"subject digest {subject_digest!r} is not sha256:<64 hex>")
    metadata = {
        k: v
        for k, v in (
            ("invocationId", invocation_id),
            ("startedOn", started_on),
            ("finishedOn", finished_on),
        )
        if v is not None
    }
    run: dict[str, object] = {"builder": {"id": builder_id}}
    if metadata:
        run["metadata"] = metadata
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": hexpart}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": dict(parameters),
                "resolvedDependencies": [d.to_json() for d in dependencies],
            },
            "runDetails": run,
        },
    }


def parse(envelope: Envelope) -> Provenance:
    """The provenance an (already verified) envelope states; ProvenanceError if it is not one."""
    try:
        doc = envelope.payload_json()
    except EnvelopeError as e:
        raise ProvenanceError(str(e)) from None
    if doc.get("_type") not in ACCEPTED_STATEMENT_TYPES:
        raise ProvenanceError(f"_type is {doc.get('_type')!r}, not {STATEMENT_TYPE}")
    if doc.get("predicateType") != SLSA_PROVENANCE_V1:
        raise ProvenanceError(
            f"predicateType is {doc.get('predicateType')!r}, not {SLSA_PROVENANCE_V1}"
        )
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects or not isinstance(subjects[0], dict):
        raise ProvenanceError("the statement has no subject")
    sub = subjects[0]
    digest = sub.get("digest")
    if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
        raise ProvenanceError("subject[0] has no sha256 digest")
    pred = doc.get("predicate")
    if not isinstance(pred, dict):
        raise ProvenanceError("the statement has no predicate")
    bdef, run = pred.get("buildDefinition"), pred.get("runDetails")
    if not isinstance(bdef, dict) or not isinstance(run, dict):
        raise ProvenanceError("the predicate needs buildDefinition and runDetails")
    builder = run.get("builder")
    if not isinstance(builder, dict) or not isinstance(builder.get("id"), str):
        raise ProvenanceError("runDetails.builder.id is missing")
    deps: list[Dependency] = []
    for i, d in enumerate(bdef.get("resolvedDependencies") or []):
        if not isinstance(d, dict) or not isinstance(d.get("digest", {}), dict):
            raise ProvenanceError(f"resolvedDependencies[{i}] is not a resource descriptor")
        if not d.get("uri") and not d.get("digest"):
            raise ProvenanceError(f"resolvedDependencies[{i}] has neither uri nor digest")
        deps.append(Dependency(str(d.get("uri", "")), dict(d.get("digest") or {}), d.get("name")))
    params = bdef.get("externalParameters")
    return Provenance(
        subject_name=str(sub.get("name", "")),
        subject_digest="sha256:" + digest["sha256"],
        builder_id=builder["id"],
        build_type=str(bdef.get("buildType", "")),
        dependencies=tuple(deps),
        parameters=params if isinstance(params, dict) else {},
    )
