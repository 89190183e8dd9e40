"""The one template plan (resolve → priority → compose) and the limits compose takes."""

from __future__ import annotations

import pytest

from powernode.core.compose import Limits, ModuleLayer, compose
from powernode.core.manifest import Manifest
from powernode.core.plan import PlanEntry, plan
from powernode.core.priority import Variety
from powernode.core.semver import Requirement, Version, parse_requirement
from powernode.errors import CompositionError, ResolutionError


def entry(
    name: str,
    version: str,
    files: tuple[str, ...],
    *,
    requires: tuple[str, ...] = (),
    mask: tuple[str, ...] = (),
    protected: tuple[str, ...] = (),
    position: int = 90,
    state: str = "live",
) -> PlanEntry:
    manifest = Manifest(
        name=name,
        mask=mask,
        protected_spec=protected,
        requires=requires,
    )
    return PlanEntry(
        owner="acme",
        version=Version.parse(version),
        manifest=manifest,
        files=files,
        requires=manifest.requirements(),
        variety=Variety.SUBSCRIPTION,
        parent=None,
        category_position=position,
        promotion_state=state,
    )


def test_an_assigned_module_takes_its_priority_and_a_dependency_its_category_position() -> None:
    entries = [
        entry("app", "1.0.0", ("/etc/", "/etc/app"), requires=("acme/lib@^1",)),
        entry("lib", "1.0.0", ("/etc/", "/etc/app", "/etc/lib"), position=10),
        entry("lib", "1.2.0", ("/etc/", "/etc/app", "/etc/lib"), position=10),
    ]
    p = plan([parse_requirement("acme/app@*")], entries, {"app": 500})
    assert [(m.entry.name, str(m.entry.version), m.priority, m.assigned) for m in p.modules] == [
        ("lib", "1.2.0", 10, False),
        ("app", "1.0.0", 500, True),
    ]
    assert "acme/app@1.0.0 requires acme/lib@^1" in p.modules[0].reason
    winner = p.composition.entry("/etc/app")
    assert winner is not None and winner.winner == "app"


def test_mask_and_protected_paths_come_from_the_manifest() -> None:
    entries = [
        entry("base", "1.0.0", ("/etc/", "/etc/passwd", "/etc/x.pyc"), protected=("/etc/passwd",)),
        entry("app", "1.0.0", ("/etc/", "/etc/passwd"), mask=("*.pyc",)),
    ]
    p = plan(
        [Requirement("acme", "base"), Requirement("acme", "app")],
        entries,
        {"base": 10, "app": 90},
    )
    passwd = p.composition.entry("/etc/passwd")
    assert passwd is not None and passwd.winner == "base"
    assert [(d.path, d.module, d.reason) for d in p.composition.dropped] == [
        ("/etc/passwd", "app", "protected")
    ]


def test_resolution_and_composition_failures_keep_their_types() -> None:
    with pytest.raises(ResolutionError, match="acme/missing"):
        plan([Requirement("acme", "missing")], [], {})
    clash = [
        entry("a", "1.0.0", ("/x",), protected=("/x",)),
        entry("b", "1.0.0", ("/x",), protected=("/x",)),
    ]
    with pytest.raises(CompositionError, match="both list protected pattern"):
        plan([Requirement("acme", "a"), Requirement("acme", "b")], clash, {})


def test_limits_are_passed_in_not_read_from_constants() -> None:
    layers = [
        ModuleLayer(f"m{i}", i, Variety.SUBSCRIPTION, None, ("/f",), (), ()) for i in range(3)
    ]
    assert len(compose(layers).union) == 1
    with pytest.raises(CompositionError, match="more than 2"):
        compose(layers, Limits(max_modules=2))
    masked = [ModuleLayer("m", 1, Variety.SUBSCRIPTION, None, ("/f",), ("/a", "/b"), ())]
    with pytest.raises(CompositionError, match="mask: over 1 patterns"):
        compose(masked, Limits(max_patterns=1))


def test_a_stored_manifest_reads_leniently_under_the_module_name() -> None:
    m = Manifest.from_stored({"mask": ["*.pyc"], "dependencies": {"requires": 5}}, name="redis")
    assert (m.name, m.mask, m.protected_spec, m.requires) == ("redis", ("*.pyc",), (), ())
    assert Manifest.from_stored(None, name="x").name == "x"
