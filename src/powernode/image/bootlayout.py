"""The node's boot-time constants, rendered into the initramfs's shell from one Python source.

The initramfs (90powernode, POSIX sh) and the agent (Python) must agree on
where the store is, where the last good module set is kept, and which overlay
options build the union; :func:`boot_layout` reads them from the modules the
agent uses (``powernode.node.layout`` — the store's names, the union's source
and options —, ``agent.config``, ``agent.modules.layout``, ``agent.identity``)
and :func:`render_layout_sh` writes them as ``powernode-layout.sh``.

The module set the initramfs reads (``modules.set``) is plain text, one
module a line, ``<priority> <name> <composefs hex digest>``, because a shell
without Python or jq reads it: :func:`render_module_set` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from powernode.agent.config import DEFAULT_STATE_DIR
from powernode.agent.identity.cascade import SOURCES
from powernode.agent.identity.config import IdentityConfig
from powernode.agent.identity.fwcfg import ITEM_NAME
from powernode.agent.modules.attach import BOOT_SET
from powernode.agent.modules.layout import NodeLayout
from powernode.image.contract import (  # noqa: F401 - render_module_set: re-exported
    FWCFG_SEED_ITEM,
    P9_SEED_TAG,
    PERSIST_LABEL,
    PERSIST_STORE,
    SET_HEADER,
    render_module_set,
)
from powernode.mount.overlay import overlay_options
from powernode.node.layout import UNION_SOURCE, Verity


@dataclass(frozen=True)
class BootLayout:
    persist_label: str
    persist_mnt: str
    state_dir: str
    objects_dir: str
    images_dir: str
    boot_set: str  # the last good module set, written once a union is mounted
    persist_upper: str  # the persistent upper's base (powernode.upper=persist)
    identity_file: str
    run_dir: str  # the agent's run tmpfs: layers, union staging, the tmpfs upper, the seed
    claim_dir: str  # what the initramfs claimed (identity, boot.set), /run/powernode after boot
    generation: int
    tmpfs_size: str
    union_source: str
    overlay_fixed: str  # the options overlay_options() adds after lowerdir=
    verity_default: str
    identity_sources: str  # the agent's cascade, in order
    fwcfg_id_item: str
    fwcfg_seed_item: str
    p9_tag: str
    seed_target: str  # where the seed bundle is bound in the composed root

    def node_layout(
        self, root: Path, *, verity: Verity = "require", persist_upper: bool = False
    ) -> NodeLayout:
        """The agent's NodeLayout for the union this initramfs builds (tests compare them)."""
        return NodeLayout(
            root=root,
            state=Path(self.state_dir),
            run=Path(self.run_dir),
            upper=Path(self.persist_upper) if persist_upper else None,
            verity=verity,
        )


def boot_layout() -> BootLayout:
    """The constants, from the node layout and the agent's own modules."""
    state = Path(DEFAULT_STATE_DIR)
    layout = NodeLayout(root=Path("/sysroot"), state=state)  # run: the agent's default
    fixed = overlay_options([Path("/x")]).split(",", 1)[1]
    persist_mnt = "/" + state.relative_to("/").parts[0]
    if str(state.relative_to(persist_mnt)) != PERSIST_STORE:
        raise ValueError(f"the agent's state {state} is not {PERSIST_STORE} on {persist_mnt}")
    return BootLayout(
        persist_label=PERSIST_LABEL,
        persist_mnt=persist_mnt,
        state_dir=str(state),
        objects_dir=str(layout.store.objects_dir),
        images_dir=str(layout.store.images_dir),
        boot_set=str(layout.agent_dir / BOOT_SET),
        persist_upper=str(state / "upper"),
        identity_file=str(IdentityConfig().identity_file),
        run_dir=str(layout.run_dir),
        claim_dir="/run/powernode",
        generation=1,
        tmpfs_size=layout.tmpfs_size,
        union_source=UNION_SOURCE,
        overlay_fixed=fixed,
        verity_default="auto",
        identity_sources=" ".join(SOURCES),
        fwcfg_id_item=ITEM_NAME,
        fwcfg_seed_item=FWCFG_SEED_ITEM,
        p9_tag=P9_SEED_TAG,
        seed_target="/etc/powernode/seed",
    )


def render_layout_sh(layout: BootLayout | None = None) -> str:
    bl = layout or boot_layout()
    lines = [
        "# powernode-layout.sh: rendered by powernode.image.bootlayout; do not edit.",
        "# shellcheck shell=sh disable=SC2034",
    ]
    for f in fields(bl):
        value = str(getattr(bl, f.name))
        if "'" in value:
            raise ValueError(f"{f.name}: a quote in {value!r}")
        lines.append(f"PN_{f.name.upper()}='{value}'")
    return "\n".join(lines) + "\n"


MODULE_DIR = Path(__file__).parent / "dracut" / "90powernode"
