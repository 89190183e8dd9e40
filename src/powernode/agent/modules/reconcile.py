"""Reconcile the attached set with the desired set (``GET /node_api/modules``).

:func:`plan` is pure: the attach state and the desired modules in, the
actions out. :func:`sync` runs one cycle: pull what is new or changed
through an injected :class:`Puller` (the default, :class:`PublishPuller`,
checks the signature against the module's trust policy, then pulls into the
shared store with :func:`powernode.publish.pull.pull_artifact`), then applies
the whole new set as one transaction (:func:`.attach.apply`): if any module
is refused, nothing changes and the report says why, per module.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from powernode.agent.modules.attach import apply, record_refusals
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.refusal import ModuleRefused, Refusal, pull_refusal
from powernode.agent.modules.state import AttachState, ModuleSpec
from powernode.agent.modules.trust import PolicyReader
from powernode.core.composition import Composition
from powernode.errors import (
    ConfigError,
    DataError,
    DigestMismatchError,
    PowernodeError,
    TransportError,
    VerificationError,
)
from powernode.node import records
from powernode.node.fields import JSON
from powernode.node.store import ModuleStore, image_digest
from powernode.oci.refs import parse_reference

if TYPE_CHECKING:
    from powernode.oci.layout import LayoutRegistry
    from powernode.oci.refs import Reference
    from powernode.oci.registry import Registry
    from powernode.publish.pull import PulledArtifact
    from powernode.publish.verify import VerifiedArtifact
    from powernode.signing.policy import TrustPolicy

    # The publishing package's functions, or a test's fakes of them.
    VerifyFn = Callable[[Registry, Reference, TrustPolicy], VerifiedArtifact]
    PullFn = Callable[[Registry, Reference, ModuleStore], PulledArtifact]
    StoreFactory = Callable[[Path], ModuleStore]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DesiredModule:
    """One module of the node's desired set, as the platform states it."""

    name: str
    version: str
    digest: str  # composefs digest, "sha256:<hex>"
    priority: int  # effective priority: higher is stacked above
    reference: str = ""  # "<registry>/<owner>/<name>:<version>" or "…@sha256:<manifest>"
    policy: object = None  # trust policy: the platform's document (a mapping), or a policy
    # instance variety only: what its templates' placeholders name (agent/placeholders.py)
    facts: Mapping[str, str] | None = field(default=None, compare=False)

    def spec(self) -> ModuleSpec:
        return ModuleSpec(self.name, self.digest, self.priority, self.version, self.reference)

    @classmethod
    def from_record(cls, item: records.DesiredModule) -> DesiredModule:
        """One entry of ``GET /node_api/modules``; DataError if its reference names a directory."""
        _check_remote(item.name, item.reference)
        policy = None
        if item.trust_policy is not None:
            policy = {k: v for k, v in item.trust_policy.to_json().items() if v is not None}
        return cls(
            item.name,
            item.version,
            str(item.composefs_digest),
            item.effective_priority,
            item.reference,
            policy,
        )


def _check_remote(name: str, reference: str) -> None:
    """Refuse a reference naming a local directory (``oci:…``) in a desired module.

    Issue 13, item 7: the platform's references name a registry. Read as
    skopeo's ``oci:DIR:TAG``, ``oci:5000/acme/x:1`` (also a valid
    ``host:port/repository:tag``) made the agent create an image layout at
    the relative path ``5000/acme/x``, as root. A layout directory as the
    module source is the node's own setting (``modules_registry = "oci:/DIR"``).
    """
    if reference.startswith("oci:"):
        raise DataError(
            f"desired module {name}: field 'reference': {reference!r} names a local "
            "directory (oci:…); a desired module's reference names a registry. For an OCI "
            'layout directory as the module source set modules_registry = "oci:/DIR" in '
            "the agent config"
        )


class Puller(Protocol):
    """Brings a desired module's image and objects into the store, or raises."""

    def pull(self, module: DesiredModule, layout: NodeLayout) -> None: ...


@dataclass(frozen=True)
class PublishPuller:
    """The default puller: signature against the trust policy, then pull (docs/signing.md).

    The signature is checked with :func:`powernode.publish.verify.verify_artifact`
    (the signature and the content it covers), and the pull then names the
    verified manifest by digest, so a tag moved in between cannot slip
    another artifact in. A module without a trust policy is refused unless
    ``unsafe_no_signature`` (tests, air-gapped labs). A policy given as the
    platform's document (a mapping) is read by ``policies``
    (:class:`.trust.PolicyReader`); any other value is used as a signing
    policy as is. ``registry`` is one registry for every module, or ``None``
    to open the registry each module's reference names (loopback hosts in
    plain HTTP, the rest in HTTPS: :func:`powernode.publish.target.open_target`).
    ``verify``/``pull_fn``/``store_cls`` default to the publishing package's
    functions, imported on the first pull (the agent's resident memory stays
    without them until then); tests pass fakes.
    """

    registry: Registry | None = None  # None: the registry each reference names
    verify: VerifyFn | None = None  # default: powernode.publish.verify.verify_artifact
    pull_fn: PullFn | None = None  # default: powernode.publish.pull.pull_artifact
    store_cls: StoreFactory | None = None  # default: powernode.node.store.ModuleStore
    policies: PolicyReader = field(default_factory=PolicyReader)
    # http(s)://host[:port]: for references naming none, or it; oci:/DIR: an OCI image
    # layout directory for references naming none (docs/agent-modules.md "Module source")
    default_registry: str = ""
    # host[:port] signatures name for references naming none, when default_registry is
    # another address of that registry (AgentConfig.modules_registry_name); "": its own
    registry_name: str = ""
    unsafe_no_signature: bool = False
    last: dict[str, PulledArtifact] = field(default_factory=dict, compare=False)

    def _policy(self, module: DesiredModule) -> TrustPolicy | None:
        if module.policy is None:
            if self.unsafe_no_signature:
                return None
            raise VerificationError(
                f"module {module.name} ({module.reference}): no trust policy, so its "
                "signature cannot be checked; set the module's trust policy on the platform"
            )
        if isinstance(module.policy, Mapping):
            return self.policies(module.policy, f"module {module.name}: trust_policy")
        return typing.cast("TrustPolicy", module.policy)

    def _open(self, module: DesiredModule, ref: Reference) -> Registry:
        from powernode.oci.registry import open_registry  # noqa: PLC0415 - on first pull
        from powernode.publish.target import open_target  # noqa: PLC0415 - on first pull

        if self.default_registry.startswith("oci:"):
            if ref.registry is None:
                return open_layout_source(self.default_registry)
        elif self.default_registry:
            host = self.default_registry.split("://", 1)[1]
            if ref.registry is None or ref.registry == host:
                return open_registry(self.default_registry)
        if ref.registry is None:
            raise ConfigError(
                f"module {module.name}: reference {module.reference!r} names no registry; "
                "set modules_registry in the agent config"
            )
        _check_remote(module.name, module.reference)  # never a directory the platform names
        return open_target(module.reference)[0]

    def pull(self, module: DesiredModule, layout: NodeLayout) -> None:
        from powernode.publish.pull import pull_artifact  # noqa: PLC0415 - on first pull
        from powernode.publish.verify import verify_artifact  # noqa: PLC0415 - on first pull

        ref = parse_reference(module.reference)
        policy = self._policy(module)
        registry, opened = self.registry, None
        if registry is None:
            registry = opened = self._open(module, ref)
        if ref.registry is None and self.registry_name:
            # the signature names the registry's own name, not the address dialled
            ref = dataclasses.replace(ref, registry=self.registry_name)
        try:
            if policy is not None:
                verified = (self.verify or verify_artifact)(registry, ref, policy)
                _same_digest(module, str(verified.composefs_digest), "signed artifact")
                ref = verified.reference
            store = (self.store_cls or ModuleStore)(layout.state)
            pulled = (self.pull_fn or pull_artifact)(registry, ref, store)
            _same_digest(module, str(pulled.composefs_digest), "pulled artifact")
            self.last[module.name] = pulled
        finally:
            close = getattr(opened, "close", None)
            if close is not None:
                close()


def open_layout_source(source: str) -> LayoutRegistry:
    """The OCI image layout directory ``oci:/DIR`` names, read only (never created).

    The same verification follows as for a registry: the signature under the
    module's trust policy, the pull by the verified manifest digest, every blob
    hashed on read (``LayoutRegistry``) and the composefs digest compared with
    the desired one. A missing or half-written directory (no ``oci-layout``
    file, image-spec image-layout.md) is a pull failure the next sync retries.
    """
    from powernode.oci.layout import LayoutRegistry  # noqa: PLC0415 - on first pull

    path = Path(source.removeprefix("oci:"))
    if not path.is_absolute():
        raise ConfigError(f"modules_registry: {source!r}: write oci:/absolute/path")
    try:
        return LayoutRegistry(path, create=False)
    except OSError as e:
        raise TransportError(
            f"module source {source}: cannot read it: {e.strerror}; "
            "check the directory (mounted? readable by the agent?)"
        ) from e


def _same_digest(module: DesiredModule, got: str, what: str) -> None:
    if image_digest(got) != image_digest(module.digest):
        raise DigestMismatchError(
            f"{what} {module.reference}: composefs digest", module.digest, got
        )


ActionKind = Literal["attach", "upgrade", "reprioritize", "detach", "keep", "remount"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    module: str
    digest: str = ""  # the digest wanted ("" for detach)
    previous: str = ""  # the digest attached before, if any


def plan(state: AttachState, desired: Sequence[DesiredModule]) -> list[Action]:
    """What to do, per module, to get from ``state`` to ``desired`` (sorted by module)."""
    wanted = {d.name: d for d in desired}
    if len(wanted) != len(desired):
        dup = sorted({d.name for d in desired if sum(x.name == d.name for x in desired) > 1})
        raise DataError(f"desired set names module(s) more than once: {', '.join(dup)}")
    mounted = set(state.mounted)
    actions = []
    for name in sorted(set(wanted) | set(state.modules)):
        cur, want = state.modules.get(name), wanted.get(name)
        if want is None:
            actions.append(Action("detach", name, "", cur.digest if cur else ""))
        elif cur is None:
            actions.append(Action("attach", name, want.digest))
        elif cur.composefs != image_digest(want.digest):
            actions.append(Action("upgrade", name, want.digest, cur.digest))
        elif cur.priority != want.priority:
            actions.append(Action("reprioritize", name, want.digest, cur.digest))
        elif cur.hex not in mounted:
            actions.append(Action("remount", name, want.digest, cur.digest))
        else:
            actions.append(Action("keep", name, want.digest, cur.digest))
    return actions


@dataclass(frozen=True)
class SyncReport:
    """One reconcile cycle: the plan, whether the union changed, and any refusals."""

    actions: tuple[Action, ...]
    changed: bool
    generation: int
    refusals: tuple[Refusal, ...] = field(default=())
    # init actions that failed after the union changed (agent/initactions.py failures())
    init_failures: tuple[Mapping[str, JSON], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.refusals


def _pull_refusal(module: DesiredModule, e: PowernodeError) -> Refusal:
    return pull_refusal(module.name, module.digest, module.reference, e)


def sync(
    layout: NodeLayout,
    desired: Sequence[DesiredModule],
    *,
    puller: Puller | None = None,
    composition: Composition | None = None,
) -> SyncReport:
    """One reconcile cycle; never raises for a refused module (the report carries it)."""
    # The store lock (shared) from the first pull to the mount: gc waits meanwhile.
    with layout.state_file.store_locked(exclusive=False):
        return _sync(layout, desired, puller, composition)


def _sync(
    layout: NodeLayout,
    desired: Sequence[DesiredModule],
    puller: Puller | None,
    composition: Composition | None,
) -> SyncReport:
    state = layout.state_file.load()
    actions = plan(state, desired)
    refusals: list[Refusal] = []
    by_name = {d.name: d for d in desired}
    for a in actions:
        if a.kind not in ("attach", "upgrade") or puller is None:
            continue
        module = by_name[a.module]
        if not module.reference:
            continue  # nothing to pull from (a desired file for the store as it is)
        try:
            puller.pull(module, layout)
        except PowernodeError as e:
            log.warning("pull of %s failed: %s", module.name, e)
            refusals.append(_pull_refusal(module, e))
    if not refusals:  # data migrations of the upgrades, before the new versions mount
        refusals = _migrate(layout, state, actions, by_name, puller)
    if refusals:
        record_refusals(layout, refusals)
        return SyncReport(tuple(actions), False, state.generation, tuple(refusals))
    try:
        target = {d.name: d.spec() for d in desired}
        facts = {d.name: d.facts for d in desired if d.facts is not None}
        result = apply(layout, target, composition=composition, facts=facts)
    except ModuleRefused as e:
        return SyncReport(tuple(actions), False, state.generation, e.refusals)
    failed = _init_actions(layout, actions)
    return SyncReport(tuple(actions), result.changed, result.generation, init_failures=failed)


def _migrate(
    layout: NodeLayout,
    state: AttachState,
    actions: Sequence[Action],
    by_name: Mapping[str, DesiredModule],
    puller: Puller | None,
) -> list[Refusal]:
    """agent/migration.py on each upgrade whose new config the puller just read."""
    from powernode.agent.initactions import save_config  # noqa: PLC0415
    from powernode.agent.migration import before_apply  # noqa: PLC0415

    pulled = getattr(puller, "last", {})
    upgrades = []
    for a in actions:
        if a.kind in ("attach", "upgrade") and a.module in pulled:
            save_config(layout, a.module, getattr(pulled[a.module], "config", {}) or {})
        if a.kind == "upgrade" and a.module in pulled:
            config = getattr(pulled[a.module], "config", {}) or {}
            d = by_name[a.module]
            upgrades.append((d.name, d.version, d.digest, config.get("manifest")))
    return before_apply(layout, state, upgrades)


def _init_actions(layout: NodeLayout, actions: Sequence[Action]) -> tuple[Mapping[str, JSON], ...]:
    """agent/initactions.py: each module's actions for what just happened to it; the failed."""
    from powernode.agent.initactions import after_apply, failures  # noqa: PLC0415

    changes = [(a.kind, a.module) for a in actions if a.kind in ("attach", "upgrade", "detach")]
    if not changes:
        return ()
    return tuple(failures(after_apply(layout, changes)))
