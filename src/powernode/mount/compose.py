"""Stack several composefs modules into one union, in priority order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.mount.overlay import MountStack, Upper
from powernode.node.layout import Verity


@dataclass(frozen=True)
class Layer:
    """One module to stack: its composefs image and the name it is mounted under."""

    name: str
    image: Path
    priority: int


def stack_modules(
    stack: MountStack,
    layers: Sequence[Layer],
    objects: Path,
    target: Path,
    *,
    state: Path,
    writable: bool = True,
    verity: Verity = "off",
) -> Path:
    """Mount each image under ``state/layers/<name>`` and the union at ``target``.

    The highest priority (ties: name, as ``core.priority`` orders them) is the
    top lower layer. With ``writable`` a tmpfs under ``state/upper`` holds the
    upper and work directories, so writes never touch the images and vanish
    with the union.
    """
    ordered = sorted(layers, key=lambda layer: (-layer.priority, layer.name))
    lowers = [stack.image(layer.image, state / "layers" / layer.name) for layer in ordered]
    upper = None
    if writable:
        tmp = stack.tmpfs(state / "upper")
        (tmp / "upper").mkdir()
        (tmp / "work").mkdir()
        upper = Upper(tmp / "upper", tmp / "work")
    return stack.overlay(target, lowers, [objects], upper=upper, verity=verity)
