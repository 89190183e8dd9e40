"""Composition rules, one named case each (docs/composition.md)."""

from __future__ import annotations

import json

import pytest

from powernode.core.compose import ModuleLayer, compose
from powernode.core.composition import Composition, Dropped, Takeover
from powernode.core.priority import Variety
from powernode.errors import CompositionError, DataError

SUB, CFG, INST = Variety.SUBSCRIPTION, Variety.CONFIG, Variety.INSTANCE


def layer(
    name: str,
    priority: int,
    files: list[str],
    *,
    variety: Variety = SUB,
    parent: str | None = None,
    mask: tuple[str, ...] = (),
    protected: tuple[str, ...] = (),
) -> ModuleLayer:
    return ModuleLayer(name, priority, variety, parent, tuple(files), mask, protected)


def test_highest_priority_wins_and_lower_ones_are_shadowed() -> None:
    c = compose(
        [
            layer("base", 100, ["/etc/", "/etc/motd"]),
            layer("app", 900, ["/etc/", "/etc/motd"]),
            layer("net", 600, ["/etc/", "/etc/motd"]),
        ]
    )
    e = c.entry("/etc/motd")
    assert e is not None
    assert e.winner == "app"
    assert e.shadowed == ("net", "base")
    assert [m.name for m in c.modules] == ["base", "net", "app"]  # stacking order, lowest first


def test_tie_goes_to_the_bytewise_smaller_name() -> None:
    c = compose([layer("zeta", 900, ["/x"]), layer("alpha", 900, ["/x"])])
    assert c.winners() == {"/x": "alpha"}
    assert [m.name for m in c.modules] == ["zeta", "alpha"]


def test_directories_merge_and_record_every_provider() -> None:
    c = compose([layer("a", 1, ["/etc/", "/etc/a"]), layer("b", 2, ["/etc/", "/etc/b"])])
    d = c.entry("/etc/")
    assert d is not None
    assert d.is_dir and d.winner is None and d.shadowed == ()
    assert d.providers == ("b", "a")
    assert c.winners() == {"/etc/a": "a", "/etc/b": "b"}


def test_own_mask_drops_own_file() -> None:
    c = compose([layer("nginx", 900, ["/etc/nginx/default", "/etc/nginx/x"], mask=("default",))])
    assert c.dropped == (Dropped("/etc/nginx/default", "nginx", "mask", "nginx", "default"),)
    assert c.entry("/etc/nginx/default") is None
    assert c.winners() == {"/etc/nginx/x": "nginx"}


def test_own_mask_is_local_only() -> None:
    c = compose([layer("a", 1, ["/etc/x"], mask=("/etc/y",)), layer("b", 2, ["/etc/y"])])
    assert c.winners() == {"/etc/x": "a", "/etc/y": "b"}
    assert c.dropped == ()


def test_protected_beats_a_higher_priority_neighbour() -> None:
    # seed 003: a service module cannot override system-base's /etc/shadow
    c = compose(
        [
            layer("system-base", 100, ["/etc/shadow"], protected=("/etc/shadow",)),
            layer("web", 900, ["/etc/shadow", "/etc/web"]),
        ]
    )
    assert c.winners() == {"/etc/shadow": "system-base", "/etc/web": "web"}
    assert c.dropped == (Dropped("/etc/shadow", "web", "protected", "system-base", "/etc/shadow"),)


def test_protected_beats_a_lower_priority_neighbour() -> None:
    c = compose(
        [
            layer("base", 100, ["/etc/nginx/conf.d/00-security.conf"]),
            layer("nginx", 900, [], protected=("/etc/nginx/conf.d/00-security.conf",)),
        ]
    )
    # the owner need not ship it: nobody else may
    assert c.entry("/etc/nginx/conf.d/00-security.conf") is None
    assert [d.module for d in c.dropped] == ["base"]
    assert c.dropped[0].by == "nginx"


def test_protection_is_not_applied_to_directories() -> None:
    c = compose(
        [
            layer(
                "ssh", 500, ["/etc/", "/etc/ssh/", "/etc/ssh/sshd_config"], protected=("/etc/*",)
            ),
            layer("app", 900, ["/etc/", "/etc/app"]),
        ]
    )
    d = c.entry("/etc/")
    assert d is not None and d.providers == ("app", "ssh")
    assert c.dropped == (Dropped("/etc/app", "app", "protected", "ssh", "/etc/*"),)


def test_effective_mask_is_own_mask_plus_others_protected() -> None:
    c = compose(
        [
            layer("a", 1, [], mask=("*.bak",), protected=("/etc/a",)),
            layer("b", 2, [], protected=("/etc/b", "/etc/b2")),
            layer("c", 3, []),
        ]
    )
    masks = {m.name: m.effective_mask for m in c.modules}
    assert masks == {
        "a": ("*.bak", "/etc/b", "/etc/b2"),
        "b": ("/etc/a",),
        "c": ("/etc/a", "/etc/b", "/etc/b2"),
    }


def test_two_owners_of_one_union_path_conflict() -> None:
    with pytest.raises(CompositionError) as e:
        compose(
            [
                layer("a", 1, ["/etc/ssh/sshd_config"], protected=("/etc/ssh/**",)),
                layer("b", 2, [], protected=("sshd_config",)),
            ]
        )
    (msg,) = e.value.conflicts
    assert "'a' ('/etc/ssh/**') and 'b' ('sshd_config') both protect '/etc/ssh/sshd_config'" in msg
    assert "narrow one protected_spec" in msg


def test_overlapping_protection_off_the_union_is_not_a_conflict() -> None:
    c = compose(
        [layer("a", 1, ["/x"], protected=("/etc/**",)), layer("b", 2, [], protected=("*.conf",))]
    )
    assert c.winners() == {"/x": "a"}


def test_identical_protected_pattern_conflicts() -> None:
    with pytest.raises(CompositionError) as e:
        compose(
            [
                layer("a", 1, [], protected=("/etc/chrony.conf",)),
                layer("b", 2, [], protected=("/etc/chrony.conf",)),
            ]
        )
    assert e.value.conflicts == [
        "modules 'a' and 'b' both list protected pattern '/etc/chrony.conf'; a path has one "
        "owner: remove it from one protected_spec"
    ]


def test_all_conflicts_are_collected_then_raised_once() -> None:
    with pytest.raises(CompositionError) as e:
        compose(
            [
                layer("a", 1, ["/p", "/q"], protected=("/p", "/q")),
                layer("b", 2, [], protected=("/p",)),
                layer("c", 3, [], protected=("q",)),
                layer("d", 4, ["/d"], mask=("/q",)),
            ]
        )
    conflicts = e.value.conflicts
    assert len(conflicts) == 3
    assert "'a' and 'b' both list protected pattern '/p'" in conflicts[0]
    assert "'a' ('/q') and 'c' ('q') both protect '/q'" in conflicts[1]
    assert str(e.value).startswith("3 composition conflict(s): ")
    assert "(and 2 more)" in str(e.value)


CHRONY = layer(
    "chrony",
    903 - 3,
    ["/etc/chrony/", "/etc/chrony/chrony.conf", "/etc/chrony/sources.d/pool.sources"],
    protected=("/etc/chrony/chrony.conf",),
)


def test_config_child_takes_over_its_parents_protected_path() -> None:
    child = layer(
        "chrony-no-pool",
        50,  # lower than the parent: the takeover still wins
        ["/etc/chrony/", "/etc/chrony/chrony.conf"],
        variety=CFG,
        parent="chrony",
        mask=("/etc/chrony/chrony.conf",),
    )
    c = compose([CHRONY, child])
    assert c.winners()["/etc/chrony/chrony.conf"] == "chrony-no-pool"
    assert c.takeovers == (
        Takeover(
            "/etc/chrony/chrony.conf", "chrony-no-pool", "chrony", "/etc/chrony/chrony.conf", True
        ),
    )
    assert c.dropped == (
        Dropped(
            "/etc/chrony/chrony.conf",
            "chrony",
            "takeover",
            "chrony-no-pool",
            "/etc/chrony/chrony.conf",
        ),
    )
    assert c.winners()["/etc/chrony/sources.d/pool.sources"] == "chrony"


def test_carve_out_removes_the_path_from_the_union() -> None:
    child = layer(
        "chrony-no-pool", 903, [], variety=CFG, parent="chrony", mask=("/etc/chrony/chrony.conf",)
    )
    c = compose([CHRONY, child])
    assert c.entry("/etc/chrony/chrony.conf") is None
    assert c.takeovers[0].shipped is False
    assert c.dropped[0].reason == "takeover"
    _headers, rows = c.table_rows()
    assert [
        "/etc/chrony/chrony.conf",
        "",
        "chrony",
        "carved out by chrony-no-pool (/etc/chrony/chrony.conf)",
    ] in rows


def test_takeover_also_drops_third_party_copies() -> None:
    child = layer(
        "chrony-no-pool",
        903,
        ["/etc/chrony/chrony.conf"],
        variety=CFG,
        parent="chrony",
        mask=("/etc/chrony/*.conf",),
    )
    other = layer("other", 990, ["/etc/chrony/chrony.conf"])
    c = compose([CHRONY, child, other])
    assert c.winners()["/etc/chrony/chrony.conf"] == "chrony-no-pool"
    assert {(d.module, d.reason, d.by) for d in c.dropped} == {
        ("chrony", "takeover", "chrony-no-pool"),
        ("other", "protected", "chrony"),
    }


@pytest.mark.parametrize(
    ("variety", "parent", "who"),
    [(SUB, "chrony", "subscription"), (CFG, "ntp", "config"), (INST, None, "instance")],
    ids=["not-config", "other-parent", "instance"],
)
def test_mask_over_a_protected_path_is_only_for_the_config_child(
    variety: Variety, parent: str | None, who: str
) -> None:
    m = layer("intruder", 950, [], variety=variety, parent=parent, mask=("/etc/chrony/**",))
    with pytest.raises(CompositionError) as e:
        compose([CHRONY, m])
    (msg,) = e.value.conflicts
    assert msg == (
        f"module 'intruder' ({who}): mask pattern '/etc/chrony/**' matches "
        "'/etc/chrony/chrony.conf', protected by 'chrony'; only a config module whose "
        "parent_module is 'chrony' may take over 'chrony''s protected path: narrow the mask"
    )


def test_two_children_taking_over_one_path_conflict() -> None:
    kids = [
        layer(n, 903, [], variety=CFG, parent="chrony", mask=("chrony.conf",)) for n in ("k1", "k2")
    ]
    with pytest.raises(CompositionError, match="'k1' and 'k2' both take over"):
        compose([CHRONY, *kids])


def test_own_mask_over_own_protected_path_just_drops_it() -> None:
    c = compose([layer("a", 1, ["/x", "/y"], mask=("/x",), protected=("/x",))])
    assert c.winners() == {"/y": "a"}
    assert c.dropped == (Dropped("/x", "a", "mask", "a", "/x"),)


def test_file_and_directory_at_one_path_conflict() -> None:
    with pytest.raises(CompositionError, match="'/etc/x' is a directory in 'a' but a file in 'b'"):
        compose([layer("a", 1, ["/etc/x/"]), layer("b", 2, ["/etc/x"])])


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (layer("a", 1, [], mask=("/etc/[x",)), "module 'a': mask: glob '/etc/[x' at offset 5"),
        (layer("a", 1, [], protected=("",)), "module 'a': protected: glob ''"),
        (layer("a", 1, ["etc/x"]), "module 'a': files: 'etc/x' is not a normalised"),
        (layer("a", 1, ["/etc//x"]), "'/etc//x' is not a normalised"),
        (layer("a", 1, ["/etc/../x"]), "'/etc/../x' is not"),
        (layer("a", 1, ["/etc/./"]), "'/etc/./' is not"),
        (layer("a", 1, ["/x", "/a\0/b"]), "'/a\\x00/b' is not"),
    ],
    ids=["mask-glob", "protected-empty", "relative", "double-slash", "dotdot", "dot", "nul"],
)
def test_bad_input_names_module_and_field(bad: ModuleLayer, fragment: str) -> None:
    with pytest.raises(CompositionError) as e:
        compose([layer("ok", 2, ["/ok"]), bad])
    assert any(fragment in c for c in e.value.conflicts), e.value.conflicts


def test_duplicate_module_names() -> None:
    with pytest.raises(CompositionError, match="'a' is listed twice"):
        compose([layer("a", 1, []), layer("a", 2, [])])


def test_too_many_modules() -> None:
    with pytest.raises(CompositionError, match="more than 1000"):
        compose([layer(f"m{i}", i, []) for i in range(1001)])


def test_empty_composition() -> None:
    c = compose([])
    assert c.to_dict() == {"modules": [], "union": [], "dropped": [], "takeovers": []}


def sample() -> Composition:
    return compose(
        [
            layer(
                "system-base",
                100,
                ["/etc/", "/etc/shadow", "/etc/motd"],
                protected=("/etc/shadow",),
            ),
            CHRONY,
            layer(
                "chrony-no-pool",
                903,
                ["/etc/chrony/chrony.conf"],
                variety=CFG,
                parent="chrony",
                mask=("/etc/chrony/chrony.conf",),
            ),
            layer(
                "web", 950, ["/etc/", "/etc/shadow", "/etc/motd", "/etc/web.bak"], mask=("*.bak",)
            ),
        ]
    )


def test_to_dict_is_json_stable_and_round_trips() -> None:
    c = sample()
    d = c.to_dict()
    text = json.dumps(d, sort_keys=True)
    assert Composition.from_dict(json.loads(text)) == c
    assert [u["path"] for u in d["union"]] == sorted(u["path"] for u in d["union"])
    motd = next(u for u in d["union"] if u["path"] == "/etc/motd")
    assert motd == {
        "path": "/etc/motd",
        "kind": "file",
        "winner": "web",
        "shadowed": ["system-base"],
        "providers": ["web", "system-base"],
    }
    assert d["modules"][0] == {
        "name": "system-base",
        "priority": 100,
        "variety": "subscription",
        "parent": None,
        "effective_mask": ["/etc/chrony/chrony.conf"],
    }


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("union"), "missing field 'union'"),
        (lambda d: d["modules"][0].update(variety="weird"), "modules[0].variety"),
        (lambda d: d["modules"][0].update(priority="9"), "modules[0].priority: expected int"),
        (lambda d: d["union"][0].update(providers=[]), "union[0].providers: empty"),
        (lambda d: d["dropped"][0].update(reason="why"), "dropped[0].reason"),
        (lambda d: d["takeovers"][0].pop("shipped"), "takeovers[0]: missing field 'shipped'"),
    ],
    ids=["no-union", "variety", "priority-type", "no-providers", "reason", "takeover-field"],
)
def test_from_dict_names_the_bad_field(mutate: object, fragment: str) -> None:
    d = sample().to_dict()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(DataError) as e:
        Composition.from_dict(d)
    assert fragment in str(e.value)


def test_table_rows() -> None:
    headers, rows = sample().table_rows()
    assert headers == ["path", "winner", "shadowed", "note"]
    assert ["/etc/", "", "", "dir: merged from web, system-base"] in rows
    assert ["/etc/motd", "web", "system-base", ""] in rows
    assert [
        "/etc/chrony/chrony.conf",
        "chrony-no-pool",
        "",
        "taken over from chrony (/etc/chrony/chrony.conf)",
    ] in rows
    assert ["/etc/shadow", "", "web", "dropped: protected by system-base (/etc/shadow)"] in rows
    assert ["/etc/web.bak", "", "web", "dropped: own mask *.bak"] in rows
    assert all(len(r) == len(headers) and all(isinstance(x, str) for x in r) for r in rows)


def worked_example(
    nginx_mask: tuple[str, ...] = ("/etc/nginx/sites-enabled/default",),
) -> list[ModuleLayer]:
    from powernode.core.priority import effective_priority as ep

    return [
        layer(
            "system-base",
            ep(10, SUB),
            ["/etc/", "/etc/motd", "/etc/shadow"],
            protected=("/etc/shadow",),
        ),
        layer(
            "chrony",
            ep(90, SUB),
            [
                "/etc/",
                "/etc/chrony/",
                "/etc/chrony/chrony.conf",
                "/etc/chrony/sources.d/",
                "/etc/chrony/sources.d/pool.sources",
            ],
            protected=("/etc/chrony/chrony.conf",),
        ),
        layer(
            "chrony-no-pool",
            ep(90, CFG),
            ["/etc/", "/etc/chrony/", "/etc/chrony/chrony.conf"],
            variety=CFG,
            parent="chrony",
            mask=("/etc/chrony/chrony.conf",),
        ),
        layer(
            "nginx",
            ep(90, SUB),
            [
                "/etc/",
                "/etc/motd",
                "/etc/shadow",
                "/etc/nginx/",
                "/etc/nginx/nginx.conf",
                "/etc/nginx/sites-enabled/",
                "/etc/nginx/sites-enabled/default",
            ],
            mask=nginx_mask,
            protected=("/etc/nginx/conf.d/00-security.conf",),
        ),
    ]


def test_docs_worked_example() -> None:
    """The example in docs/composition.md, outcome by outcome."""
    c = compose(worked_example())
    assert [(m.name, m.priority) for m in c.modules] == [
        ("system-base", 10),
        ("nginx", 90),
        ("chrony", 90),
        ("chrony-no-pool", 90),  # above chrony at the same priority: config > subscription
    ]
    assert c.winners() == {
        "/etc/chrony/chrony.conf": "chrony-no-pool",
        "/etc/chrony/sources.d/pool.sources": "chrony",
        "/etc/motd": "nginx",
        "/etc/nginx/nginx.conf": "nginx",
        "/etc/shadow": "system-base",
    }
    etc = c.entry("/etc/")
    assert etc is not None
    assert etc.providers == ("chrony-no-pool", "chrony", "nginx", "system-base")
    assert {(d.path, d.module, d.reason) for d in c.dropped} == {
        ("/etc/chrony/chrony.conf", "chrony", "takeover"),
        ("/etc/nginx/sites-enabled/default", "nginx", "mask"),
        ("/etc/shadow", "nginx", "protected"),
    }
    nginx = next(m for m in c.modules if m.name == "nginx")
    assert nginx.effective_mask == (
        "/etc/chrony/chrony.conf",
        "/etc/nginx/sites-enabled/default",
        "/etc/shadow",
    )
    with pytest.raises(CompositionError) as e:
        compose(worked_example(nginx_mask=("/etc/chrony/**",)))
    assert e.value.conflicts == [
        "module 'nginx' (subscription): mask pattern '/etc/chrony/**' matches "
        "'/etc/chrony/chrony.conf', protected by 'chrony'; only a config module whose "
        "parent_module is 'chrony' may take over 'chrony''s protected path: narrow the mask"
    ]


def test_seed_003_override_95_sits_above_userland_and_system_base() -> None:
    """Issue 13 item 11: the runbook's ``effective_priority: 95 // higher than userland (90)``.

    It landed below system-base (100) when priorities were stored x10.
    """
    from powernode.core.priority import effective_priority as ep

    layers = [
        layer("system-base", ep(10, SUB), ["/etc/", "/etc/motd"]),
        layer("app", ep(90, Variety.INSTANCE), ["/etc/", "/etc/motd"]),
        layer("override", ep(90, SUB, 95), ["/etc/", "/etc/motd"]),
    ]
    c = compose(layers)
    assert c.winners() == {"/etc/motd": "override"}
    assert [m.name for m in c.modules] == ["system-base", "app", "override"]
    assert [m.priority for m in c.modules] == [10, 90, 95]
