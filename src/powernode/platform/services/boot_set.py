"""A new instance's first module set, handed to its initramfs: on its persist disk, or over 9p.

The qemu provider writes the set's images and objects into the instance's
persist filesystem when it formats it (:func:`write_persist_tree`, then
``mkfs.ext4 -d``): the initramfs finds them where the agent keeps its store and
only has to enable fs-verity on them (one process, ``pn-verity-enable``), no
copy at boot. ``modules.set`` travels in the fw-cfg seed tar. Measured under
TCG, importing an 8,255-object set over 9p took minutes; docs/decisions.md.

The virtio-9p share (:func:`write_share`) stays for a bundle that carries its
own store (another provider, a hand-made seed); the initramfs imports it.

docs/decisions.md ("A new node's first module set"): the provider writes the
instance's desired set as ``modules.set`` (the initramfs's format,
:func:`powernode.image.contract.render_module_set`) and the composefs images
and objects it needs as ``store/{images,objects}`` into a per-instance
directory that QEMU shares read-only with tag ``powernode-seed``. The bootstrap
token and CA stay in the small fw-cfg seed tar. 90powernode imports the store
into the persist partition, checks every image's digest and composes the root.

The images and objects come from a module store on the platform's host
(``qemu_boot_store``: the layout :class:`powernode.publish.store.ModuleStore`
writes, e.g. by ``powernode module pull``). Files are hard-linked when the store
is on the same filesystem, copied otherwise; nothing in the store is changed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import ImageFormatError
from powernode.image.contract import PERSIST_STORE, render_module_set
from powernode.platform.problems import ProviderError
from powernode.verity.composefs.reader import Image

MAX_IMAGE_BYTES = 256 << 20


@dataclass(frozen=True)
class BootModule:
    name: str
    priority: int
    digest: str  # "sha256:<hex>", the composefs digest


def _hex(m: BootModule) -> str:
    hex_digest = m.digest.removeprefix("sha256:")
    if len(hex_digest) != 64 or not all(c in "0123456789abcdef" for c in hex_digest):
        raise ProviderError(f"module {m.name!r}: {m.digest!r} is not a sha256 composefs digest")
    return hex_digest


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def check(modules: Iterable[BootModule], store: Path) -> list[tuple[Path, set[str]]]:
    """Each module's image and the objects it references; ProviderError naming what is missing."""
    found: list[tuple[Path, set[str]]] = []
    missing: list[str] = []
    for m in modules:
        image = store / "images" / f"{_hex(m)}.cfs"
        try:
            data = image.read_bytes()
        except FileNotFoundError:
            missing.append(f"{m.name} (image {m.digest})")
            continue
        if len(data) > MAX_IMAGE_BYTES:
            raise ProviderError(f"module {m.name!r}: {image} is larger than {MAX_IMAGE_BYTES}")
        try:
            objects = Image.from_bytes(data, source=str(image)).objects()
        except ImageFormatError as e:
            raise ProviderError(f"module {m.name!r}: {image} is not a composefs image: {e}") from e
        absent = sorted(o for o in objects if not (store / "objects" / o).is_file())
        if absent:
            missing.append(f"{m.name} ({len(absent)} object(s), e.g. {absent[0]})")
        found.append((image, objects))
    if missing:
        raise ProviderError(
            f"the boot store {store} lacks what the instance's first module set needs: "
            f"{'; '.join(missing)} (pull the modules into it: powernode module pull)",
            boot_store=str(store),
        )
    return found


def _place_store(found: list[tuple[Path, set[str]]], store: Path, dest: Path) -> int:
    """``found``'s images and objects under ``dest/{images,objects}``; how many files."""
    n = 0
    for image, objects in found:
        _place(image, dest / "images" / image.name)
        n += 1
        for o in sorted(objects):
            target = dest / "objects" / o
            if not target.exists():
                _place(store / "objects" / o, target)
                n += 1
    return n


def write_share(modules: tuple[BootModule, ...], store: Path, dest: Path) -> int:
    """``dest/modules.set`` and ``dest/store/``; returns how many files were placed."""
    found = check(modules, store)
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    n = _place_store(found, store, dest / "store")
    (dest / "modules.set").write_text(render_module_set(modules))
    return n


def write_persist_tree(modules: tuple[BootModule, ...], store: Path, dest: Path) -> tuple[str, int]:
    """The set's images and objects under ``dest/var/lib/powernode/{images,objects}`` (a
    tree for ``mkfs.ext4 -d``); returns ``modules.set``'s text and how many files."""
    found = check(modules, store)
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    return render_module_set(modules), _place_store(found, store, dest / PERSIST_STORE)
