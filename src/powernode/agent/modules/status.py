"""Per-module status (``powernode-agent status``) and the heartbeat's running digests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import DesiredModule
from powernode.agent.modules.union import serving_union
from powernode.node.store import image_digest


@dataclass(frozen=True)
class ModuleStatus:
    """One module: desired (version or None), pulled, verified, mounted, and its digest."""

    name: str
    desired: str | None  # the desired version; None when not in the desired set (or unknown)
    digest: str  # mounted digest if mounted, else the desired one, else the attached one
    attached: bool
    pulled: bool  # the image for ``digest`` is in the store
    verified: bool  # fully verified in this boot (a seal exists for it)
    mounted: bool  # part of the union being served
    priority: int | None
    version: str  # attached version ("" if not attached)
    refusal: str = ""  # why it was last refused, if it was

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def status(
    layout: NodeLayout, desired: Sequence[DesiredModule] | None = None
) -> list[ModuleStatus]:
    """Every attached, desired or refused module, sorted by name; reads state, changes nothing."""
    state = layout.state_file.load()
    serving = serving_union(layout)
    mounted = set(state.mounted) if serving else set()
    wanted = {d.name: d for d in desired or ()}
    seals = layout.seals()
    out = []
    # Refused modules are listed too: a module refused on its first pull is neither
    # attached nor, without ``desired``, known otherwise, and the refusal is the news.
    for name in sorted(set(state.modules) | set(wanted) | set(state.refusals)):
        cur, want = state.modules.get(name), wanted.get(name)
        is_mounted = cur is not None and cur.hex in mounted
        refused = state.refusals.get(name, ())
        if is_mounted and cur is not None:
            digest = cur.digest
        elif want is not None:
            digest = want.digest
        else:
            refused_digest = next((r.digest for r in state.refusals.get(name, ())), "")
            digest = cur.digest if cur is not None else refused_digest
        out.append(
            ModuleStatus(
                name=name,
                desired=want.version if want is not None else None,
                digest=digest,
                attached=cur is not None,
                pulled=bool(digest) and layout.store.has_image(image_digest(digest)),
                verified=bool(digest) and seals.load(image_digest(digest).hex) is not None,
                mounted=is_mounted,
                priority=cur.priority if cur else (want.priority if want else None),
                version=cur.version if cur else "",
                refusal=str(refused[0]) if refused else "",
            )
        )
    return out


def running_module_digests(layout: NodeLayout) -> dict[str, str]:
    """``{name: "sha256:<hex>"}`` of the modules in the union being served (heartbeat)."""
    state = layout.state_file.load()
    if not serving_union(layout):
        return {}
    mounted = set(state.mounted)
    return {n: m.digest for n, m in state.modules.items() if m.hex in mounted}
