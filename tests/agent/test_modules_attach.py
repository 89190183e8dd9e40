"""Attach/detach/restore with real EROFS + overlay mounts: winners, upper, state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powernode.agent.modules.attach import attach, detach, restore
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.union import serving_union
from powernode.errors import ConfigError
from tests.agent.test_modules_support import big, build_module, layout, mounts_under

__all__ = ["layout"]

pytestmark = pytest.mark.mount


def test_attach_stacks_by_priority_and_detach_restores(layout: NodeLayout) -> None:
    base = build_module(
        layout, "base", {"etc/shared.conf": big("base"), "usr/bin/tool": big("tool")}, priority=10
    )
    cfg = build_module(layout, "cfg", {"etc/shared.conf": big("cfg")}, priority=50)
    r1 = attach(layout, base)
    assert r1.changed and r1.generation == 1
    assert (layout.root / "etc/shared.conf").read_bytes() == big("base")
    r2 = attach(layout, cfg)
    assert r2.generation == 2
    assert [m.name for m in r2.modules] == ["cfg", "base"]
    assert (layout.root / "etc/shared.conf").read_bytes() == big("cfg")
    assert (layout.root / "usr/bin/tool").read_bytes() == big("tool")
    # only one union is stacked on the root: the old one was detached
    assert mounts_under(layout.root) == [str(layout.root)]
    detach(layout, "cfg")
    assert (layout.root / "etc/shared.conf").read_bytes() == big("base")
    detach(layout, "base")
    assert not serving_union(layout)
    assert not (layout.root / "usr").exists()


def test_tmpfs_upper_takes_writes_and_survives_restack(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/a": big("a")}, priority=10)
    attach(layout, base)
    (layout.root / "etc/written").write_text("hello")
    other = build_module(layout, "other", {"opt/b": big("b")}, priority=20)
    attach(layout, other)
    assert (layout.root / "etc/written").read_text() == "hello"
    assert not (layout.store.objects_dir / "etc").exists()


def test_attach_same_module_twice_changes_nothing(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/a": big("a")})
    attach(layout, base)
    again = attach(layout, base)
    assert not again.changed and again.generation == 1


def test_state_survives_restart_and_is_remounted(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/a": big("a")}, priority=10)
    attach(layout, base)
    doc = json.loads((layout.agent_dir / "modules.json").read_text())
    assert doc["modules"]["base"]["digest"] == base.digest
    # a restart within the same boot: the union is still there, restore swaps in a fresh one
    r = restore(layout)
    assert r.generation == 2 and not r.refused
    assert (layout.root / "etc/a").read_bytes() == big("a")
    assert mounts_under(layout.root) == [str(layout.root)]


def test_detach_unknown_module_names_the_attached_ones(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/a": big("a")})
    attach(layout, base)
    before = (layout.agent_dir / "modules.json").read_bytes()
    with pytest.raises(ConfigError, match=r"'nope' is not attached \(attached: base\)"):
        detach(layout, "nope")
    assert (layout.agent_dir / "modules.json").read_bytes() == before


def test_persistent_upper_dir_keeps_writes_across_teardown(tmp_path: Path) -> None:
    from powernode.agent.modules.union import teardown
    from tests.agent.test_modules_support import cleaned

    lay = NodeLayout(
        root=tmp_path / "root", state=tmp_path / "state", upper=tmp_path / "persist", boot_id="b"
    )
    with cleaned(tmp_path, lay):
        base = build_module(lay, "base", {"etc/a": big("a")})
        attach(lay, base)
        (lay.root / "etc/kept").write_text("kept")
        teardown(lay)
        assert not (lay.root / "etc").exists()
        restore(lay)
        assert (lay.root / "etc/kept").read_text() == "kept"
        assert (tmp_path / "persist/upper/etc/kept").read_text() == "kept"


def test_verity_option_follows_the_layout(tmp_path: Path) -> None:
    from powernode.agent.modules.union import kernel_verity
    from tests.agent.test_modules_support import cleaned

    lay = NodeLayout(root=tmp_path / "r", state=tmp_path / "s", verity="require", boot_id="b")
    assert kernel_verity(lay) == "require"
    auto = NodeLayout(root=tmp_path / "r", state=tmp_path / "s")
    (tmp_path / "s/objects").mkdir(parents=True)
    # this kernel has no fs-verity (shared/notes/FACTS.md): auto must not ask for it
    expected = "off" if not Path("/proc/sys/fs/verity").exists() else "on"
    assert kernel_verity(auto) == expected
    with cleaned(tmp_path, lay):
        attach(lay, build_module(lay, "base", {"etc/a": big("a")}))
        line = next(
            ln
            for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if f" {lay.root} " in ln
        )
        assert "verity=require" in line
