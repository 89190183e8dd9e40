"""Seals shared across images: a new version re-hashes only the objects no seal of this boot
vouches for, and a shared object altered after it was sealed is still caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.agent.modules.integrity import verify_module
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.refusal import ModuleRefused
from tests.agent.test_modules_support import big, build_module, object_of
from tests.agent.test_modules_tamper import flip_byte

SHARED = {f"usr/lib/f{i}": big(f"shared{i}") for i in range(8)}


def lay(tmp_path: Path, boot: str = "boot-1") -> NodeLayout:
    return NodeLayout(root=tmp_path / "root", state=tmp_path / "state", boot_id=boot)


def check(layout: NodeLayout, name: str, digest: str, *, deep: bool = False) -> int:
    v = verify_module(layout.store, name, digest, seals=layout.seals(), deep=deep)
    v.close()
    return v.rehashed


def test_new_version_hashes_only_its_new_objects(tmp_path: Path) -> None:
    layout = lay(tmp_path)
    v1 = build_module(layout, "app", {**SHARED, "opt/x": big("x1")})
    v2 = build_module(layout, "app", {**SHARED, "opt/x": big("x2")}, version="2")
    assert check(layout, "app", v1.digest) == 9  # first check: everything
    assert check(layout, "app", v2.digest) == 1  # only opt/x's new object
    assert check(layout, "app", v2.digest) == 0  # sealed now
    assert check(layout, "app", v2.digest, deep=True) == 9
    # another boot: the seals of this one vouch for nothing
    assert check(lay(tmp_path, "boot-2"), "app", v2.digest) == 9


def test_shared_object_altered_after_sealing_is_refused(tmp_path: Path) -> None:
    layout = lay(tmp_path)
    v1 = build_module(layout, "app", {**SHARED, "opt/x": big("x1")})
    v2 = build_module(layout, "app", {**SHARED, "opt/x": big("x2")}, version="2")
    check(layout, "app", v1.digest)
    obj = object_of(layout, v1, "usr/lib/f3")
    flip_byte(obj)
    with pytest.raises(ModuleRefused) as e:
        check(layout, "app", v2.digest)
    assert [(r.reason, r.path) for r in e.value.refusals] == [("object-digest", str(obj))]


def test_the_kernels_fs_verity_measurement_stands_for_a_hash_unless_deep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a node's persist store every object has fs-verity (this host's kernel has none, so
    FS_IOC_MEASURE_VERITY is answered here as the guest's kernel answers it: the digest
    enabled on the file). A measurement equal to the object's name proves it without a
    read; one that differs (tampered with its Merkle tree rebuilt, other parameters) sends
    the object to be hashed, and refused if its content is wrong; ``deep`` hashes all."""
    from powernode.agent.modules import integrity

    layout = lay(tmp_path)
    v1 = build_module(layout, "app", {**SHARED, "opt/x": big("x1")})
    enabled: dict[int, bytes] = {}  # the digest "fs-verity was enabled with", per inode
    for name in SHARED | {"opt/x": b""}:
        obj = object_of(layout, v1, name)
        enabled[obj.stat().st_ino] = bytes.fromhex(obj.parent.name + obj.name)
    hashed: list[int] = []
    real_digest = integrity.object_digest_fd

    def measure(fd: int) -> bytes:
        import os

        return enabled[os.fstat(fd).st_ino]

    def digest_fd(fd: int, size: int, path: Path) -> str:
        hashed.append(fd)
        return real_digest(fd, size, path)

    monkeypatch.setattr(integrity, "measure_verity", measure)
    monkeypatch.setattr(integrity, "object_digest_fd", digest_fd)
    v = verify_module(layout.store, "app", v1.digest, seals=layout.seals(), deep=False)
    v.close()
    assert (v.rehashed, hashed) == (9, [])  # 9 checked, every one by measurement
    # deep: every byte is read, whatever the kernel says
    check(layout, "app", v1.digest, deep=True)
    assert len(hashed) == 9
    # a measurement that is not the name: hashed, and its bad content refused
    hashed.clear()
    obj = object_of(layout, v1, "usr/lib/f3")
    enabled[obj.stat().st_ino] = b"\x01" * 32
    flip_byte(obj)
    with pytest.raises(ModuleRefused) as e:
        check(lay(tmp_path, "boot-2"), "app", v1.digest)
    assert [(r.reason, r.path) for r in e.value.refusals] == [("object-digest", str(obj))]
    assert len(hashed) == 1
