"""The union follows the composition: protected owners win, carve-outs vanish."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from powernode.agent.modules import NodeLayout, apply, attach, detach, restore
from powernode.agent.modules.masks import Fix, plan_fixes
from powernode.agent.modules.state import ModuleSpec
from powernode.core.composition import Composition, Dropped, StackedModule, UnionEntry
from powernode.core.priority import Variety
from tests.agent.test_modules_support import big, build_module, layout

__all__ = ["layout"]


def composition(union: list[tuple[str, tuple[str, ...]]], dropped: list[Dropped]) -> Composition:
    mods = tuple(
        StackedModule(n, p, Variety.SUBSCRIPTION, None, ()) for n, p in (("owner", 10), ("app", 50))
    )
    return Composition(
        mods, tuple(UnionEntry(p, pr) for p, pr in sorted(union)), tuple(dropped), ()
    )


PROTECTED = composition(
    [("/etc/", ("app", "owner")), ("/etc/owned.conf", ("owner",)), ("/etc/app.conf", ("app",))],
    [
        Dropped("/etc/owned.conf", "app", "protected", "owner", "/etc/owned.conf"),
        Dropped("/etc/secret", "app", "takeover", "cfg", "/etc/secret"),
    ],
)


def test_plan_fixes_only_where_the_stack_order_is_wrong() -> None:
    assert plan_fixes(PROTECTED, ["app", "owner"]) == [
        Fix("etc/owned.conf", "owner"),
        Fix("etc/secret", None),
    ]
    # owner on top already wins: only the carve-out needs a whiteout
    assert plan_fixes(PROTECTED, ["owner", "app"]) == [Fix("etc/secret", None)]
    # modules not attached are ignored
    assert plan_fixes(PROTECTED, ["owner"]) == []


@pytest.mark.mount
def test_protected_owner_wins_and_carve_out_is_hidden(layout: NodeLayout) -> None:
    owner = build_module(layout, "owner", {"etc/owned.conf": big("owner")}, priority=10)
    app = build_module(
        layout,
        "app",
        {"etc/owned.conf": big("app"), "etc/app.conf": big("appc"), "etc/secret": big("s")},
        priority=50,
    )
    etc_src = layout.state.parent / "src" / "app-1.0.0" / "etc"
    apply(layout, {"owner": owner, "app": app}, composition=PROTECTED)
    root = layout.root
    assert (root / "etc/owned.conf").read_bytes() == big("owner")
    assert (root / "etc/app.conf").read_bytes() == big("appc")
    assert not (root / "etc/secret").exists()
    assert sorted(os.listdir(root / "etc")) == ["app.conf", "owned.conf"]
    st = os.stat(root / "etc")
    assert (st.st_mode & 0o7777, st.st_uid) == (os.stat(etc_src).st_mode & 0o7777, 0)
    assert os.stat(root / "etc/owned.conf").st_size == len(big("owner"))
    # the composition is kept: a later restack and a restart still follow it
    extra = build_module(layout, "extra", {"opt/x": big("x")}, priority=5)
    attach(layout, extra)
    assert (root / "etc/owned.conf").read_bytes() == big("owner")
    restore(layout)
    assert (root / "etc/owned.conf").read_bytes() == big("owner")
    assert not (root / "etc/secret").exists()
    detach(layout, "app")
    assert (root / "etc/owned.conf").read_bytes() == big("owner")


@pytest.mark.mount
def test_a_composition_naming_a_file_the_winner_lacks_is_refused(layout: NodeLayout) -> None:
    from powernode.errors import DataError

    owner = build_module(layout, "owner", {"etc/other": big("o")}, priority=10)
    app = build_module(layout, "app", {"etc/owned.conf": big("app")}, priority=50)
    attach(layout, ModuleSpec("owner", owner.digest, 10))
    with pytest.raises(DataError, match="won by 'owner', whose image does not ship it"):
        apply(layout, {"owner": owner, "app": app}, composition=PROTECTED)
    assert not (layout.root / "etc/owned.conf").exists()
    assert (layout.root / "etc/other").read_bytes() == big("o")
    assert not (layout.agent_dir / "composition.json").exists()
    assert Path(layout.run_dir).is_dir()


@pytest.mark.mount
def test_a_composition_that_fixes_no_path_of_the_stack_is_kept_without_a_restack(
    layout: NodeLayout,
) -> None:
    """The first sync after boot: the initramfs stacked by priority and stored no
    composition; the platform's changes nothing of this stack, so the union serving (and
    its fs-verity) stays, and no module is hashed again. One that does fix a path
    restacks."""
    owner = build_module(layout, "owner", {"etc/owned.conf": big("owner")}, priority=50)
    app = build_module(layout, "app", {"etc/owned.conf": big("app")}, priority=10)
    first = apply(layout, {"owner": owner, "app": app})
    only_carve_out_elsewhere = composition(
        [("/etc/", ("owner", "app")), ("/etc/owned.conf", ("owner", "app"))],
        [Dropped("/etc/owned.conf", "app", "protected", "owner", "/etc/owned.conf")],
    )  # owner is on top already: no fix
    kept = apply(layout, {"owner": owner, "app": app}, composition=only_carve_out_elsewhere)
    assert (kept.changed, kept.generation) == (False, first.generation)
    assert (layout.agent_dir / "composition.json").is_file()  # stored for later restacks
    assert (layout.root / "etc/owned.conf").read_bytes() == big("owner")
    hidden = composition(
        [("/etc/", ("owner", "app")), ("/etc/owned.conf", ("owner", "app"))],
        [
            Dropped("/etc/owned.conf", "app", "protected", "owner", "/etc/owned.conf"),
            Dropped("/etc/secret", "owner", "takeover", "cfg", "/etc/secret"),
        ],
    )  # a whiteout for /etc/secret: another union
    moved = apply(layout, {"owner": owner, "app": app}, composition=hidden)
    assert (moved.changed, moved.generation) == (True, first.generation + 1)
