"""``powernode-agent verify <path>``: a verdict on an artifact or on mounted modules.

``path`` may be

- an artifact directory (``module build --out``, docs/artifact.md): the
  image against ``module.json``'s composefs digest, every object under
  ``objects/`` against its name;
- a composefs image in a store (``<state>/images/<hex>.cfs``): against the
  digest it is named by, with the store's objects;
- the node root while a union is served: every mounted module;
- a mounted module layer (``<run>/gen-N/layers/<module>``): that module.

Every check is deep (no seals). Signatures belong to the registry artifact,
not to these files: ``verify_artifact`` (powernode.publish) checks them
before a pull, so the verdict says what it did about them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from powernode.agent.modules.integrity import verify_image
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.refusal import ModuleRefused, Refusal
from powernode.agent.modules.union import serving_union
from powernode.errors import ConfigError
from powernode.node.store import image_digest, read_module_json

log = logging.getLogger(__name__)

Kind = Literal["artifact", "image", "union", "module"]
SIGNATURE_NOTE = (
    "not checked here: files on disk carry no signature; the agent checks the "
    "registry artifact's signature against the trust policy before pulling it"
)


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: modules that passed, objects checked, refusals."""

    path: str
    kind: Kind
    modules: tuple[tuple[str, str], ...]  # (module, composefs digest) that verified
    objects: int  # objects checked (distinct, per module)
    refusals: tuple[Refusal, ...]
    signature: str = SIGNATURE_NOTE

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def exit_code(self) -> int:
        """0: everything matched; 1: something did not (the CLI exits with this)."""
        return 0 if self.ok else 1


def _check(
    path: Path, kind: Kind, items: list[tuple[str, str, Path, Path]]
) -> Verdict:  # (module, digest, image, objects dir)
    passed: list[tuple[str, str]] = []
    refusals: list[Refusal] = []
    objects = 0
    for module, digest, image, objects_dir in items:
        try:
            v = verify_image(image, objects_dir, module, digest, deep=True)
        except ModuleRefused as e:
            refusals.extend(e.refusals)
            continue
        v.close()
        passed.append((module, v.digest))
        objects += v.objects
    return Verdict(str(path), kind, tuple(passed), objects, tuple(refusals))


def verify_path(path: Path, layout: NodeLayout | None = None) -> Verdict:
    """Verify what ``path`` names (see the module docstring); ConfigError if it names nothing
    verifiable."""
    path = path.absolute()
    if (path / "module.json").is_file():
        info = read_module_json(path)
        return _check(
            path, "artifact", [(info.name, str(info.digest), path / "image.cfs", path / "objects")]
        )
    if path.is_file() and path.suffix == ".cfs" and path.parent.name == "images":
        digest = image_digest(path.stem, what=f"{path}: file name").hex
        return _check(path, "image", [(path.stem, digest, path, path.parent.parent / "objects")])
    if layout is not None:
        state = layout.state_file.load()
        store = layout.store
        if path == layout.root.absolute():
            if not serving_union(layout):
                raise ConfigError(f"{path}: no module union is mounted here; attach modules first")
            mounted = set(state.mounted)
            items = [
                (m.name, m.digest, store.image_path(m.composefs), store.objects_dir)
                for m in state.modules.values()
                if m.hex in mounted
            ]
            return _check(path, "union", sorted(items))
        if path.parent.name == "layers" and path.parent.parent.parent == layout.run_dir:
            m = state.modules.get(path.name)
            if m is not None and m.hex in state.mounted:
                item = (m.name, m.digest, store.image_path(m.composefs), store.objects_dir)
                return _check(path, "module", [item])
    raise ConfigError(
        f"{path}: not an artifact directory (module.json), a store image (images/<hex>.cfs), "
        "the node root with a mounted union, or a mounted module layer"
    )


def verify_attached(layout: NodeLayout, name: str | None = None) -> Verdict:
    """Deeply verify the attached module ``name``, or every attached module; ConfigError
    if ``name`` is not attached. Mounted or not: this checks what is in the store."""
    state = layout.state_file.load()
    store = layout.store
    if name is not None and name not in state.modules:
        attached = ", ".join(sorted(state.modules)) or "none"
        raise ConfigError(f"module {name!r} is not attached (attached: {attached})")
    chosen = [m for n, m in sorted(state.modules.items()) if name is None or n == name]
    items = [(m.name, m.digest, store.image_path(m.composefs), store.objects_dir) for m in chosen]
    kind: Kind = "module" if name is not None else "union"
    return _check(layout.root if name is None else Path(name), kind, items)
