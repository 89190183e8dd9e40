"""Attach a module straight from a registry reference (``powernode-agent modules attach REF``).

For an operator at the node, without the platform: the artifact's
signature is checked against a trust policy *first* (the name, version and
composefs digest are then the signed ones), the verified manifest is pulled
by digest into the shared store, and the module is attached like any other
(verified again before the mount, one transaction). A failure at any step
is a :class:`ModuleRefused` with the reason (``signature``,
``artifact-digest``, ``pull-failed``, or the mount-time reasons), recorded
for ``status``; nothing new is mounted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from powernode.agent.modules.attach import AttachResult, attach, record_refusals
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.refusal import ModuleRefused, pull_refusal
from powernode.agent.modules.state import ModuleSpec, check_module_name
from powernode.errors import ConfigError, DigestMismatchError, PowernodeError
from powernode.node.store import ModuleStore

if TYPE_CHECKING:
    from powernode.agent.modules.reconcile import PullFn, VerifyFn
    from powernode.oci.refs import Reference
    from powernode.oci.registry import Registry
    from powernode.signing.policy import TrustPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefAttached:
    """What ``attach_ref`` attached, and what the pull cost."""

    module: ModuleSpec
    result: AttachResult
    bytes_downloaded: int
    objects_fetched: int
    objects_reused: int


def _name_of(ref: Reference) -> str:
    return ref.repository.rsplit("/", 1)[-1]


def attach_ref(
    layout: NodeLayout,
    registry: Registry,
    ref: Reference,
    policy: TrustPolicy | None,
    *,
    priority: int,
    reference: str = "",
    unsafe_no_signature: bool = False,
    verify: VerifyFn | None = None,
    pull_fn: PullFn | None = None,
) -> RefAttached:
    """Verify ``ref`` under ``policy``, pull it, attach it; ModuleRefused says why not.

    ``policy`` is a :mod:`powernode.signing` policy; ``None`` is refused
    unless ``unsafe_no_signature``. ``reference`` is what ``status`` shows
    (default: ``ref`` as written).
    """
    from powernode.publish.pull import pull_artifact  # noqa: PLC0415 - the agent's memory
    from powernode.publish.verify import verify_artifact  # noqa: PLC0415 - the agent's memory

    # The store lock (shared) from the pull to the mount: gc waits meanwhile.
    with layout.state_file.store_locked(exclusive=False):
        shown = reference or str(ref)
        name = _name_of(ref)
        if policy is None and not unsafe_no_signature:
            raise ConfigError(
                f"{shown}: no trust policy: pass --policy FILE (cosign.pub or a JSON policy); "
                "refusing to attach an artifact whose signer is unknown"
            )
        try:
            signed = None
            if policy is not None:
                verified = (verify or verify_artifact)(registry, ref, policy)
                name, signed = verified.name, verified.composefs_digest
                ref = verified.reference  # pinned: the pull takes exactly what was verified
            check_module_name(name)
            pulled = (pull_fn or pull_artifact)(registry, ref, ModuleStore(layout.state))
            digest = str(pulled.composefs_digest)
            if signed is not None and digest != str(signed):
                # The pull names the verified manifest by digest: this means a broken registry.
                raise DigestMismatchError(
                    f"pulled artifact {shown}: composefs digest", str(signed), digest
                )
            name = str(pulled.config.get("name", name))
            version = str(pulled.config.get("version", ""))
        except PowernodeError as e:
            refusal = pull_refusal(name, "", shown, e)
            if isinstance(e, ConfigError) and "module name" in str(e):
                raise
            record_refusals(layout, [refusal])
            log.warning("attach %s refused: %s", shown, refusal)
            raise ModuleRefused([refusal]) from e
        module = ModuleSpec(name, digest, priority, version, shown)
        result = attach(layout, module)
        return RefAttached(
            module, result, pulled.bytes_downloaded, pulled.objects_fetched, pulled.objects_reused
        )
