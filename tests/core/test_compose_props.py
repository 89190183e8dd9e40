"""Property tests: winners, protection and determinism over random module sets."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import event, given, settings
from hypothesis import strategies as st

from powernode.core.compose import ModuleLayer, compose
from powernode.core.composition import Composition
from powernode.core.priority import Variety, priority_key
from powernode.errors import CompositionError

from .globref import ref_matches

DIRS = ["/etc/", "/etc/a/", "/usr/", "/usr/lib/"]
FILES = ["/etc/a/x.conf", "/etc/a/y", "/etc/b.conf", "/etc/c", "/usr/lib/x.conf", "/usr/lib/z"]
PATTERNS = ["/etc/b.conf", "/etc/a/**", "x.conf", "/usr/**", "*.conf", "/etc/c", "y", "/etc/***"]
NAMES = ["base", "chrony", "cfg", "inst", "web", "web2"]


@st.composite
def layer_sets(draw: st.DrawFn) -> list[ModuleLayer]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    out = []
    for n in names:
        variety = draw(st.sampled_from(list(Variety)))
        others = [m for m in names if m != n]
        parent = draw(st.sampled_from([None, *others])) if others else None
        small = st.lists(st.sampled_from(PATTERNS), max_size=1)
        out.append(
            ModuleLayer(
                name=n,
                priority=draw(st.integers(0, 6)),
                variety=variety,
                parent=parent,
                files=tuple(draw(st.lists(st.sampled_from(DIRS + FILES), unique=True))),
                mask=tuple(draw(small)),
                protected=tuple(draw(small)),
            )
        )
    # Often make a config module mask what its parent protects: a takeover.
    where = {m.name: k for k, m in enumerate(out)}
    for k, m in enumerate(out):
        if m.parent and draw(st.booleans()):
            pk = where[m.parent]
            if not out[pk].protected:
                out[pk] = replace(out[pk], protected=(draw(st.sampled_from(PATTERNS)),))
            out[k] = replace(out[k], variety=Variety.CONFIG, mask=out[pk].protected)
    return out


def check_invariants(layers: list[ModuleLayer], c: Composition) -> None:
    by_name = {m.name: m for m in layers}
    dropped = {(d.module, d.path) for d in c.dropped}
    union = {e.path: e for e in c.union}
    taken = {t.path: t for t in c.takeovers}
    # every shipped path is either provided in the union or recorded as dropped
    for m in layers:
        for p in m.files:
            provided = p in union and m.name in union[p].providers
            assert provided != ((m.name, p) in dropped)
    for p, e in union.items():
        live = [m for m in layers if p in m.files and (m.name, p) not in dropped]
        expect = sorted(
            live, key=lambda m: priority_key(m.name, m.priority, m.variety), reverse=True
        )
        assert e.providers == tuple(m.name for m in expect)
        if e.is_dir:
            continue
        assert e.winner == expect[0].name  # the max-priority non-dropped provider
        for owner in layers:
            if owner.name == e.winner:
                continue
            if any(ref_matches(q, p) for q in owner.protected):
                # someone else won a protected path: only its config child may
                w = by_name[e.winner]
                assert w.variety is Variety.CONFIG and w.parent == owner.name
                assert taken[p].module == w.name and taken[p].parent == owner.name


@settings(max_examples=300, deadline=None)
@given(layer_sets(), st.randoms(use_true_random=False))
def test_composition_invariants_and_determinism(layers: list[ModuleLayer], rnd: object) -> None:
    try:
        c = compose(layers)
    except CompositionError as e:
        event("conflict")
        assert e.conflicts  # an error always says what collided
        shuffled = list(layers)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        try:
            compose(shuffled)
        except CompositionError as e2:
            assert sorted(e2.conflicts) == sorted(e.conflicts)
        else:
            raise AssertionError("reordering the input made a conflict disappear") from None
        return
    event("composed" + (" with takeover" if c.takeovers else ""))
    check_invariants(layers, c)
    shuffled = list(layers)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert compose(shuffled).to_dict() == c.to_dict()
    assert Composition.from_dict(json.loads(json.dumps(c.to_dict()))) == c
