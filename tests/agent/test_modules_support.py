"""Fixtures for the agent module tests (no tests here): composefs modules built into a store,
and a layout whose mounts are all undone afterwards, even after a failure."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.state import ModuleSpec
from powernode.agent.modules.union import teardown
from powernode.mount.kernel import umount
from powernode.node.store import image_digest
from powernode.verity.composefs.writer import build_image


def build_module(
    layout: NodeLayout,
    name: str,
    files: Mapping[str, bytes],
    *,
    priority: int = 100,
    version: str = "1.0.0",
) -> ModuleSpec:
    """Write ``files`` as a tree, build its composefs image into the layout's store."""
    src = layout.state.parent / "src" / f"{name}-{version}"
    for rel, data in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (0, 0))
    src.mkdir(parents=True, exist_ok=True)
    store = layout.store
    result = build_image(src, None, digest_store=store.objects_dir)
    image = layout.state.parent / "src" / f"{name}-{version}.cfs"
    build_image(src, image)
    store.put_image(image.read_bytes(), image_digest(result.digest))
    return ModuleSpec(name, f"sha256:{result.digest}", priority, version)


def big(tag: str, n: int = 100) -> bytes:
    """Content stored as an object (composefs inlines files of 64 bytes or less)."""
    return (tag.encode() + b"\n") * n


def object_of(layout: NodeLayout, spec: ModuleSpec, rel: str) -> Path:
    """The store path of the object behind ``rel`` in ``spec``'s image."""
    from powernode.verity.composefs.reader import open_image

    image = open_image(layout.store.image_path(spec.composefs))
    entry = image.lookup("/" + rel)
    assert entry.object is not None, f"{rel} is inline in the image"
    return layout.store.objects_dir / entry.object


def mounts_under(path: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4]
        if Path(point).is_relative_to(path):
            out.append(point)
    return out


@contextlib.contextmanager
def cleaned(tmp: Path, layout: NodeLayout) -> Iterator[NodeLayout]:
    """Yield the layout; afterwards unmount everything under ``tmp``, even after a failure."""
    try:
        yield layout
    finally:
        with contextlib.suppress(Exception):
            teardown(layout)
        for _ in range(64):
            left = mounts_under(tmp)
            if not left:
                break
            with contextlib.suppress(Exception):
                umount(Path(left[-1]), detach=True)
        assert not mounts_under(tmp), f"mounts left behind: {mounts_under(tmp)}"


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[NodeLayout]:
    """A node root and state directory under tmp_path; every mount cleaned afterwards."""
    lay = NodeLayout(root=tmp_path / "root", state=tmp_path / "state", boot_id="boot-1")
    with cleaned(tmp_path, lay) as lay:
        yield lay


def build_artifact(tmp: Path, name: str, files: Mapping[str, bytes]) -> Path:
    """An artifact directory as `module build --out` writes it (the parts the agent reads)."""
    src = tmp / f"src-{name}"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    out = tmp / f"artifact-{name}"
    out.mkdir()
    result = build_image(src, out / "image.cfs", digest_store=out / "objects")
    doc = {
        "artifact_version": 1,
        "name": name,
        "version": "1.0.0",
        "composefs_digest": f"sha256:{result.digest}",
        "objects": len(result.objects),
    }
    (out / "module.json").write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    return out
