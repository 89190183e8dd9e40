"""Publishing modules: push, pull, sign and verify artifacts in OCI registries.

The formats are the contract in docs/artifact.md; the guide is docs/publish.md.
"""

from powernode.node.store import ModuleStore
from powernode.publish.fetch import FetchTuning
from powernode.publish.format import FormatLimits
from powernode.publish.pull import PulledArtifact, pull_artifact
from powernode.publish.push import push_artifact
from powernode.publish.verify import (
    VerifiedArtifact,
    sign_artifact,
    signed_repository,
    verify_artifact,
)

__all__ = [
    "FetchTuning",
    "FormatLimits",
    "ModuleStore",
    "PulledArtifact",
    "VerifiedArtifact",
    "pull_artifact",
    "push_artifact",
    "sign_artifact",
    "signed_repository",
    "verify_artifact",
]
