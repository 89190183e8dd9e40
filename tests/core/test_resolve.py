"""Dependency resolution (core/resolve.py): choices, messages, and search properties."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powernode.core.resolve import Candidate, Link, Resolution, describe_chain, resolve
from powernode.core.semver import Requirement, Version, parse_requirement
from powernode.errors import ResolutionError


def cand(
    key: str,
    version: str,
    *requires: str,
    provides: tuple[str, ...] = (),
    state: str = "live",
) -> Candidate:
    owner, name = key.split("/")
    return Candidate(
        owner=owner,
        name=name,
        version=Version.parse(version),
        requires=tuple(parse_requirement(r) for r in requires),
        provides=provides,
        promotion_state=state,
    )


def reqs(*texts: str) -> list[Requirement]:
    return [parse_requirement(t) for t in texts]


def versions(res: Resolution) -> dict[str, str]:
    return {k: str(c.version) for k, c in res.chosen.items()}


def failure(roots: list[Requirement], cands: list[Candidate], **kw: object) -> str:
    with pytest.raises(ResolutionError) as info:
        resolve(roots, cands, **kw)  # type: ignore[arg-type]
    return str(info.value)


# --- choices --------------------------------------------------------------------------------


def test_highest_allowed_satisfying_version_is_chosen() -> None:
    cands = [
        cand("acme/x", "1.0.0"),
        cand("acme/x", "1.4.2", state="blessed"),
        cand("acme/x", "1.9.0", state="built"),  # not allowed
        cand("acme/x", "1.5.0-rc.1"),  # prerelease: ^1 does not opt in
        cand("acme/x", "2.0.0"),  # outside ^1
    ]
    assert versions(resolve(reqs("acme/x@^1"), cands)) == {"acme/x": "1.4.2"}


def test_allowed_states_can_be_widened() -> None:
    cands = [cand("acme/x", "1.0.0"), cand("acme/x", "1.9.0", state="staging")]
    res = resolve(reqs("acme/x@^1"), cands, allowed_states=frozenset({"staging", "live"}))
    assert versions(res) == {"acme/x": "1.9.0"}


def test_transitive_closure_order_and_chains() -> None:
    cands = [
        cand("acme/app", "1.0.0", "acme/lib@^1", "powernode/system-base@^1"),
        cand("acme/lib", "1.2.0", "powernode/system-base@^1.1"),
        cand("powernode/system-base", "1.0.0"),
        cand("powernode/system-base", "1.3.0"),
        cand("other/unused", "1.0.0"),
    ]
    res = resolve(reqs("acme/app@*"), cands)
    assert versions(res) == {
        "acme/app": "1.0.0",
        "acme/lib": "1.2.0",
        "powernode/system-base": "1.3.0",
    }
    assert [c.key for c in res.order] == ["powernode/system-base", "acme/lib", "acme/app"]
    assert res.dependencies["acme/app"] == ("acme/lib", "powernode/system-base")
    assert res.dependencies["powernode/system-base"] == ()
    # system-base is reached by the shortest chain: directly from acme/app.
    assert res.explain("powernode/system-base") == (
        "template requires acme/app@* → acme/app@1.0.0 requires powernode/system-base@^1"
    )
    assert res.chains["acme/app"] == (Link(None, reqs("acme/app@*")[0]),)


def test_install_order_ties_broken_by_name() -> None:
    cands = [cand("z/z", "1.0.0", "m/m"), cand("a/a", "1.0.0", "m/m"), cand("m/m", "1.0.0")]
    res = resolve(reqs("z/z", "a/a"), cands)
    assert [c.key for c in res.order] == ["m/m", "a/a", "z/z"]


def test_empty_roots_resolve_to_nothing() -> None:
    res = resolve([], [cand("a/a", "1.0.0")])
    assert res.chosen == {}
    assert res.order == ()


def test_backtracking_picks_a_lower_version_of_a_requirer() -> None:
    cands = [
        cand("acme/app", "2.0.0", "acme/base@^2"),
        cand("acme/app", "1.0.0", "acme/base@^1"),
        cand("acme/base", "1.5.0"),
        cand("acme/base", "2.0.0"),
    ]
    res = resolve(reqs("acme/app@*", "acme/base@^1"), cands)
    assert versions(res) == {"acme/app": "1.0.0", "acme/base": "1.5.0"}


def test_backtracking_across_a_deeper_conflict() -> None:
    # a@2 → c@^2 conflicts with b → c@^1 only after b is chosen; a@1 works.
    cands = [
        cand("x/a", "2.0.0", "x/c@^2"),
        cand("x/a", "1.0.0", "x/c@^1"),
        cand("x/b", "1.0.0", "x/d@*"),
        cand("x/d", "1.0.0", "x/c@^1"),
        cand("x/c", "1.0.0"),
        cand("x/c", "2.0.0"),
    ]
    res = resolve(reqs("x/a", "x/b"), cands)
    assert versions(res) == {"x/a": "1.0.0", "x/b": "1.0.0", "x/c": "1.0.0", "x/d": "1.0.0"}


def test_two_requirers_share_one_version_satisfying_both() -> None:
    cands = [
        cand("x/a", "1.0.0", "x/c@>=1.2"),
        cand("x/b", "1.0.0", "x/c@<1.4"),
        *(cand("x/c", f"1.{m}.0") for m in range(6)),
    ]
    assert versions(resolve(reqs("x/a", "x/b"), cands))["x/c"] == "1.3.0"


def test_duplicate_identical_candidates_are_merged() -> None:
    c = cand("a/a", "1.0.0")
    assert versions(resolve(reqs("a/a"), [c, c])) == {"a/a": "1.0.0"}


def test_result_is_independent_of_candidate_order() -> None:
    cands = [
        cand("x/a", "1.0.0", "x/b@^1", "any/web"),
        cand("x/b", "1.0.0"),
        cand("x/b", "1.1.0"),
        cand("p/q", "1.0.0", provides=("web",)),
        cand("p/r", "3.0.0", provides=("web",)),
    ]
    first = resolve(reqs("x/a"), cands)
    for shuffled in itertools.permutations(cands):
        assert resolve(reqs("x/a"), shuffled) == first


# --- virtual provides -----------------------------------------------------------------------


def test_virtual_name_picks_first_owner_name_then_highest_version() -> None:
    cands = [
        cand("zeta/caddy", "9.0.0", provides=("http-server",)),
        cand("acme/nginx", "1.0.0", provides=("http-server",)),
        cand("acme/nginx", "1.2.0", provides=("http-server",)),
        cand("acme/nginx", "1.3.0", provides=("http-server",), state="built"),
    ]
    res = resolve(reqs("owner/http-server@*"), cands)
    assert versions(res) == {"acme/nginx": "1.2.0"}
    assert res.dependencies == {"acme/nginx": ()}


def test_virtual_constraint_applies_to_the_provider_version() -> None:
    cands = [
        cand("acme/nginx", "1.2.0", provides=("http-server",)),
        cand("zeta/caddy", "2.0.0", provides=("http-server",)),
    ]
    res = resolve(reqs("any/http-server@^2"), cands)
    assert versions(res) == {"zeta/caddy": "2.0.0"}


def test_virtual_name_met_by_a_provider_already_chosen() -> None:
    cands = [
        cand("acme/app", "1.0.0", "any/http-server@*"),
        cand("acme/nginx", "1.0.0", provides=("http-server",)),
        cand("zeta/caddy", "1.0.0", provides=("http-server",)),
    ]
    # Listed after the app, caddy is still chosen before the virtual name is looked at.
    res = resolve(reqs("acme/app", "zeta/caddy"), cands)
    assert set(res.chosen) == {"acme/app", "zeta/caddy"}
    assert res.dependencies["acme/app"] == ("zeta/caddy",)


def test_real_module_name_beats_a_virtual_one() -> None:
    cands = [
        cand("acme/http-server", "1.0.0"),
        cand("acme/nginx", "5.0.0", provides=("http-server",)),
    ]
    assert versions(resolve(reqs("acme/http-server@*"), cands)) == {"acme/http-server": "1.0.0"}


def test_real_module_in_a_disallowed_state_does_not_fall_back_to_virtual() -> None:
    cands = [
        cand("acme/http-server", "1.0.0", state="built"),
        cand("acme/nginx", "5.0.0", provides=("http-server",)),
    ]
    message = failure(reqs("acme/http-server@*"), cands)
    assert "no version satisfies it" in message
    assert "1.0.0 built — not in an allowed state" in message


def test_virtual_with_no_allowed_provider_message() -> None:
    cands = [cand("acme/nginx", "1.0.0", provides=("http-server",), state="built")]
    message = failure(reqs("any/http-server@*"), cands)
    assert message == (
        "template requires any/http-server@*: no module named any/http-server, and no "
        "provider of 'http-server' satisfies it (providers: acme/nginx@1.0.0 built — not in "
        "an allowed state; allowed states: blessed, live)"
    )


# --- failure messages -----------------------------------------------------------------------


def test_unknown_module_message() -> None:
    cands = [cand("acme/app", "1.0.0", "acme/nope@^1")]
    assert failure(reqs("acme/app@^1"), cands) == (
        "template requires acme/app@^1 → acme/app@1.0.0 requires acme/nope@^1: unknown module "
        "acme/nope: no candidate has that name and none provides 'nope'; check the spelling "
        "or publish it"
    )


def test_no_satisfying_version_message_is_a_chain() -> None:
    cands = [
        cand("acme/my-redis", "1.2.0", "powernode/system-base@^2.0"),
        cand("powernode/system-base", "1.0.0"),
        cand("powernode/system-base", "1.4.2"),
        cand("powernode/system-base", "2.0.0", state="built"),
    ]
    assert failure(reqs("acme/my-redis@^1"), cands) == (
        "template requires acme/my-redis@^1 → acme/my-redis@1.2.0 requires "
        "powernode/system-base@^2.0: no version satisfies it (available: 1.0.0 live, "
        "1.4.2 live, 2.0.0 built — not in an allowed state; allowed states: blessed, live)"
    )


def test_only_disallowed_states_message_and_root_label() -> None:
    cands = [cand("acme/x", "1.0.0", state="staging"), cand("acme/x", "1.1.0", state="built")]
    message = failure(reqs("acme/x@^1"), cands, root_label="template edge-tokyo")
    assert message == (
        "template edge-tokyo requires acme/x@^1: no version satisfies it (available: "
        "1.0.0 staging — not in an allowed state, 1.1.0 built — not in an allowed state; "
        "allowed states: blessed, live)"
    )


def test_long_available_lists_are_cut() -> None:
    cands = [cand("acme/x", f"1.{m}.0") for m in range(30)]
    message = failure(reqs("acme/x@^2"), cands)
    assert "(available: … 10 older, 1.10.0 live," in message
    assert message.count("0 live") == 20


def test_conflicting_constraints_from_two_chains() -> None:
    cands = [
        cand("x/a", "1.0.0", "acme/c@^1"),
        cand("x/b", "2.0.0", "acme/c@^2"),
        cand("acme/c", "1.0.0"),
        cand("acme/c", "2.0.0"),
    ]
    assert failure(reqs("x/a@*", "x/b@*"), cands) == (
        "conflicting requirements on acme/c: no version satisfies both\n"
        "  template requires x/a@* → x/a@1.0.0 requires acme/c@^1\n"
        "  and template requires x/b@* → x/b@2.0.0 requires acme/c@^2\n"
        "  (available: 1.0.0 live, 2.0.0 live; allowed states: blessed, live)"
    )


def test_conflict_with_an_already_chosen_version() -> None:
    cands = [
        cand("x/a", "1.0.0", "acme/c@^1"),
        cand("x/b", "1.0.0", "x/d@*"),
        cand("x/d", "1.0.0", "acme/c@^2"),
        cand("acme/c", "1.0.0"),
        cand("acme/c", "2.0.0"),
    ]
    assert failure(reqs("x/a", "x/b"), cands) == (
        "conflicting requirements on acme/c: 1.0.0 was chosen for\n"
        "  template requires x/a@* → x/a@1.0.0 requires acme/c@^1\n"
        "  but template requires x/b@* → x/b@1.0.0 requires x/d@* → x/d@1.0.0 requires "
        "acme/c@^2 does not allow it"
    )


def test_three_way_conflict_lists_every_chain() -> None:
    cands = [cand("a/c", v) for v in ("1.0.0", "2.0.0", "3.0.0")]
    message = failure(reqs("a/c@1 || 2", "a/c@2 || 3", "a/c@1 || 3"), cands)
    assert message.startswith("conflicting requirements on a/c: no version satisfies all of\n")
    assert message.count("template requires a/c@") == 3


def test_requirement_cycle_is_an_error_that_prints_the_cycle() -> None:
    cands = [cand("x/b", "2.1.0", "x/a@^1"), cand("x/a", "1.0.0", "x/b@^2")]
    assert failure(reqs("x/b"), cands) == (
        "template requires x/b@* → x/b@2.1.0 requires x/a@^1 → x/a@1.0.0 requires x/b@^2: "
        "requirement cycle x/a@1.0.0 → x/b@2.1.0 → x/a; modules must not require each other "
        "in a loop, drop one of these requirements"
    )


def test_self_requirement_is_a_cycle() -> None:
    message = failure(reqs("x/a"), [cand("x/a", "1.0.0", "x/a@*")])
    assert "requirement cycle x/a@1.0.0 → x/a;" in message


def test_cycle_avoided_by_backtracking_when_possible() -> None:
    cands = [
        cand("x/a", "2.0.0", "x/b@*"),
        cand("x/a", "1.0.0"),
        cand("x/b", "1.0.0", "x/a@*"),
    ]
    assert versions(resolve(reqs("x/a"), cands)) == {"x/a": "1.0.0"}


def test_other_failed_choices_are_listed() -> None:
    cands = [
        cand("x/a", "2.0.0", "x/c@^2"),
        cand("x/a", "1.0.0", "x/d@*"),
        cand("x/d", "1.0.0", "x/c@>=1.5"),
        cand("x/c", "1.0.0"),
        cand("x/c", "2.0.0"),
    ]
    message = failure(reqs("x/a", "x/c@^1"), cands)
    assert message == (
        "conflicting requirements on x/c: no version satisfies both\n"
        "  template requires x/c@^1\n"
        "  and template requires x/a@* → x/a@2.0.0 requires x/c@^2\n"
        "  (available: 1.0.0 live, 2.0.0 live; allowed states: blessed, live)\n"
        "other choices failed too:\n"
        "- conflicting requirements on x/c: 1.0.0 was chosen for\n"
        "  template requires x/c@^1\n"
        "  but template requires x/a@* → x/a@1.0.0 requires x/d@* → x/d@1.0.0 requires "
        "x/c@>=1.5 does not allow it"
    )


def test_dead_versions_are_explained_through_the_highest() -> None:
    # Both versions of my-redis fit ^1, both need a system-base that is not allowed.
    cands = [
        cand("acme/my-redis", "1.2.0", "powernode/system-base@^2.0"),
        cand("acme/my-redis", "1.1.0", "acme/nope"),
        cand("powernode/system-base", "2.0.0", state="built"),
    ]
    assert failure(reqs("acme/my-redis@^1"), cands) == (
        "template requires acme/my-redis@^1 → acme/my-redis@1.2.0 requires "
        "powernode/system-base@^2.0: no version satisfies it (available: 2.0.0 built — not "
        "in an allowed state; allowed states: blessed, live)\n"
        "(and 1 lower-ranked candidate(s) that fit fail too)"
    )


def test_deep_dead_end_is_found_without_search() -> None:
    # Every version of every module leads to the same missing module: without the static
    # dead-candidate pass this is 20**4 combinations.
    cands = [cand(f"x/m{i}", f"1.{j}.0", f"x/m{i + 1}@^1") for i in range(4) for j in range(20)]
    cands += [cand("x/m4", "1.0.0", "x/missing")]
    message = failure(reqs("x/m0"), cands, max_steps=10)
    assert message.startswith("template requires x/m0@* → x/m0@1.19.0 requires x/m1@^1 → ")
    assert "x/m4@1.0.0 requires x/missing@*: unknown module x/missing" in message


def test_duplicate_version_precedence_is_rejected() -> None:
    cands = [cand("x/a", "1.0.0+b1"), cand("x/a", "1.0.0+b2", state="built")]
    assert failure(reqs("x/a"), cands) == (
        "two candidates of x/a have the same version precedence: 1.0.0+b1 (live) and "
        "1.0.0+b2 (built); remove one from the catalog"
    )


def test_search_is_abandoned_after_max_steps() -> None:
    # A conflict found only after a chain of choices, each with two versions: the search
    # must try 2**11 combinations before it can say there is no solution.
    cands = [cand(f"x/m{i}", v, f"x/m{i + 1}@*") for i in range(11) for v in ("1.0.0", "2.0.0")]
    cands += [cand("x/m11", "1.0.0", "x/c@^2"), cand("x/c", "1.0.0"), cand("x/c", "2.0.0")]
    message = failure(reqs("x/m0", "x/c@^1"), cands, max_steps=50)
    assert message.startswith(
        "dependency search abandoned after 50 steps (max_steps) without a solution; "
        "first problem met:\nconflicting requirements on x/c: 1.0.0 was chosen for\n"
    )
    assert message.endswith("pin narrower constraints or raise max_steps")
    assert "conflicting requirements on x/c" in failure(reqs("x/m0", "x/c@^1"), cands)


def test_describe_chain() -> None:
    a = cand("x/a", "1.0.0")
    chain = (Link(None, reqs("x/a@^1")[0]), Link(a, reqs("x/b@~2")[0]))
    assert describe_chain(chain, "roots") == "roots requires x/a@^1 → x/a@1.0.0 requires x/b@~2"


def test_docs_examples_run() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "dependencies.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.DOTALL)
    assert len(blocks) == 2, "docs/dependencies.md lost an example"
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})  # noqa: S102  # our own doc


# --- properties -----------------------------------------------------------------------------

KEYS = ["a/a", "a/b", "b/c", "c/d"]
VERSIONS = ["1.0.0", "1.1.0", "2.0.0"]
CONSTRAINTS = ["*", "*", "^1", "^2", "~1.1", "<2", ">=1.1.0", "1.0.0", "1 || 2"]
STATES = ["live", "live", "live", "blessed", "built", "retired"]
ALLOWED = frozenset({"live", "blessed"})


def _req(targets: list[str]) -> st.SearchStrategy[Requirement]:
    return st.tuples(st.sampled_from(targets), st.sampled_from(CONSTRAINTS)).map(
        lambda t: parse_requirement(f"{t[0]}@{t[1]}")
    )


_virtual_req = st.sampled_from(["v/web@*", "v/db@^1", "v/web@>=1.1"]).map(parse_requirement)


@st.composite
def universes(draw: st.DrawFn, virtual: bool = False) -> tuple[list[Requirement], list[Candidate]]:
    """Up to 4 modules x 3 versions. Requirements mostly point "down" the key list, so
    that solutions with several modules are common; cycles, unknown names and disallowed
    states still turn up."""
    cands = []
    for i, key in enumerate(KEYS):
        targets = KEYS[i + 1 :] * 4 + KEYS + ["z/missing"]
        req = st.one_of(_req(targets), _virtual_req) if virtual else _req(targets)
        for v in draw(
            st.lists(st.sampled_from(VERSIONS), unique=True, min_size=int(i < 3), max_size=3)
        ):
            owner, name = key.split("/")
            provides = tuple(draw(st.lists(st.sampled_from(["web", "db"]), unique=True)))
            cands.append(
                Candidate(
                    owner,
                    name,
                    Version.parse(v),
                    tuple(draw(st.lists(req, max_size=2))),
                    provides if virtual else (),
                    draw(st.sampled_from(STATES)),
                )
            )
    root = st.one_of(_req(KEYS), _virtual_req) if virtual else _req(KEYS)
    return draw(st.lists(root, min_size=1, max_size=3)), cands


def _brute_force_has_solution(roots: list[Requirement], cands: list[Candidate]) -> bool:
    """Any assignment (each key: absent or one allowed version) meeting every requirement
    of roots and chosen candidates, with an acyclic requirement graph."""
    options = {
        k: [None] + [c for c in cands if c.key == k and c.promotion_state in ALLOWED] for k in KEYS
    }
    for combo in itertools.product(*options.values()):
        chosen = {c.key: c for c in combo if c is not None}

        def ok(r: Requirement, chosen: dict[str, Candidate] = chosen) -> bool:
            return r.key in chosen and r.constraint.allows(chosen[r.key].version)

        if not all(ok(r) for r in roots):
            continue
        if not all(ok(r) for c in chosen.values() for r in c.requires):
            continue
        edges = {k: {r.key for r in c.requires} for k, c in chosen.items()}
        if _acyclic(edges):
            return True
    return False


def _acyclic(edges: dict[str, set[str]]) -> bool:
    remaining = dict(edges)
    while remaining:
        leaves = [k for k, ts in remaining.items() if not (ts & remaining.keys())]
        if not leaves:
            return False
        for k in leaves:
            del remaining[k]
    return True


def _check_sound(res: Resolution, roots: list[Requirement], cands: list[Candidate]) -> None:
    real = {c.key for c in cands}

    def met(r: Requirement) -> bool:
        if r.key in real:
            chosen = res.chosen.get(r.key)
            return chosen is not None and r.constraint.allows(chosen.version)
        return any(
            r.name in c.provides and r.constraint.allows(c.version) for c in res.chosen.values()
        )

    assert all(met(r) for r in roots)
    for c in res.chosen.values():
        assert c.promotion_state in ALLOWED
        assert c in cands
        assert all(met(r) for r in c.requires)
    position = {c.key: i for i, c in enumerate(res.order)}
    assert sorted(position) == sorted(res.chosen)
    for key, deps in res.dependencies.items():
        assert all(position[d] < position[key] for d in deps)  # dependencies first
    for key in res.chosen:
        chain = res.chains[key]
        assert chain[0].requirer is None
        assert all(a.requirer is None or a.requirer.key in res.chosen for a in chain)


@settings(max_examples=200, deadline=None)
@given(universes())
def test_resolution_is_sound_and_complete(
    universe: tuple[list[Requirement], list[Candidate]],
) -> None:
    roots, cands = universe
    try:
        res = resolve(roots, cands, allowed_states=ALLOWED)
    except ResolutionError:
        assert not _brute_force_has_solution(roots, cands)
    else:
        _check_sound(res, roots, cands)


@settings(max_examples=200, deadline=None)
@given(universes(virtual=True))
def test_resolution_with_virtual_names_is_sound(
    universe: tuple[list[Requirement], list[Candidate]],
) -> None:
    roots, cands = universe
    try:
        res = resolve(roots, cands, allowed_states=ALLOWED)
    except ResolutionError as e:
        assert str(e)
    else:
        _check_sound(res, roots, cands)
