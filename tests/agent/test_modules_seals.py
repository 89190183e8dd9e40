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
