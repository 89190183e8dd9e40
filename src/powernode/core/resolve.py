"""Dependency resolution: choose one version of every module a template needs.

Pure: takes root requirements and candidate versions (NodeModuleVersion rows turned into
``Candidate`` values) and returns a ``Resolution`` or raises ``ResolutionError`` whose
message explains why as a chain of requirements. Semantics are in docs/dependencies.md.

The search is depth-first. Requirements are taken from a FIFO queue (so each module is
reached by a shortest chain); real module names before virtual ``provides`` names (so a
virtual name is met by a module already chosen when one fits). At each new module the
highest allowed version that satisfies every requirement known for it is tried first; a
conflict or a cycle further on backtracks. Backtracking is conflict-directed (Prosser's
CBJ): every dead end records which decisions caused it, and the search jumps straight
back to the latest of those, so an unsatisfiable requirement is not retried under every
combination of unrelated siblings. Resolution is NP-hard in general, hence ``max_steps``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from powernode.core.semver import Requirement, Version
from powernode.errors import ResolutionError

logger = logging.getLogger(__name__)

DEFAULT_ALLOWED_STATES = frozenset({"blessed", "live"})
_ROOT = ""  # the requirer of root requirements in the edge map
_MAX_LISTED = 20  # versions shown in an "available: ..." list
_MAX_OTHER_FAILURES = 5


@dataclass(frozen=True)
class Candidate:
    """One version of one module, as the catalog offers it."""

    owner: str
    name: str
    version: Version
    requires: tuple[Requirement, ...]
    provides: tuple[str, ...]
    promotion_state: str

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return f"{self.key}@{self.version}"


@dataclass(frozen=True)
class Link:
    """``requirer`` requires ``requirement``; ``requirer`` None is the root (the template)."""

    requirer: Candidate | None
    requirement: Requirement


Chain = tuple[Link, ...]


def describe_chain(chain: Sequence[Link], root_label: str = "template") -> str:
    """``template requires a/b@^1 → a/b@1.2.0 requires c/d@^2.0``."""
    return " → ".join(
        f"{root_label if link.requirer is None else link.requirer} requires {link.requirement}"
        for link in chain
    )


@dataclass(frozen=True)
class Resolution:
    """The chosen versions, keyed ``owner/name``.

    ``order`` installs dependencies first (ties broken by ``owner/name``);
    ``dependencies[k]`` are the keys ``k`` requires; ``chains[k]`` is the chain of
    requirements through which ``k`` was first reached (a shortest one).
    """

    chosen: Mapping[str, Candidate]
    order: tuple[Candidate, ...]
    dependencies: Mapping[str, tuple[str, ...]]
    chains: Mapping[str, Chain]
    root_label: str = "template"

    def explain(self, key: str) -> str:
        """Why ``key`` is in the resolution, as a readable chain."""
        return describe_chain(self.chains[key], self.root_label)


@dataclass
class _State:
    """One node of the search; copied (shallowly: values are immutable) at each branch."""

    chosen: dict[str, Candidate] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)
    edges: dict[str, tuple[str, ...]] = field(default_factory=dict)
    real: deque[Chain] = field(default_factory=deque)
    virtual: deque[Chain] = field(default_factory=deque)
    # For backjumping: the decision (frame index) that chose each module, and the
    # decisions an edge of the requirement graph depends on.
    decided: dict[str, int] = field(default_factory=dict)
    edge_why: dict[tuple[str, str], frozenset[int]] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(
            dict(self.chosen),
            dict(self.chains),
            dict(self.edges),
            deque(self.real),
            deque(self.virtual),
            dict(self.decided),
            dict(self.edge_why),
        )

    def cause(self, *chains: Chain) -> frozenset[int]:
        """The decisions that made these requirements exist: their requirers' choices."""
        return frozenset(self.decided[r.key] for c in chains if (r := c[-1].requirer) is not None)


@dataclass(frozen=True)
class _Choice:
    chain: Chain
    options: tuple[Candidate, ...]
    cause: frozenset[int]  # decisions that narrowed ``options``


@dataclass(frozen=True)
class _Failure:
    message: str
    cause: frozenset[int]  # decisions that led here; none means no solution at all


@dataclass
class _Frame:
    state: _State
    chain: Chain
    options: Iterator[Candidate]
    conflict: set[int]


class _Search:
    """The index of candidates plus the rules; the driver loop is ``resolve``."""

    def __init__(self, candidates: Iterable[Candidate], allowed: frozenset[str], label: str):
        self.allowed = allowed
        self.label = label
        self.by_key: dict[str, list[Candidate]] = {}
        self.providers: dict[str, list[Candidate]] = {}
        for c in candidates:
            self.by_key.setdefault(c.key, []).append(c)
        for key, versions in self.by_key.items():
            versions.sort(key=lambda c: c.version.precedence(), reverse=True)
            unique = [versions[0]]
            for c in versions[1:]:
                if c == unique[-1]:
                    continue
                if c.version.precedence() == unique[-1].version.precedence():
                    raise ResolutionError(
                        f"two candidates of {key} have the same version precedence: "
                        f"{unique[-1].version} ({unique[-1].promotion_state}) and "
                        f"{c.version} ({c.promotion_state}); remove one from the catalog"
                    )
                unique.append(c)
            self.by_key[key] = unique
            for c in unique:
                for name in c.provides:
                    self.providers.setdefault(name, []).append(c)
        for provs in self.providers.values():
            # Lexicographically first owner/name, then its highest version (stable sorts).
            provs.sort(key=lambda c: c.version.precedence(), reverse=True)
            provs.sort(key=lambda c: c.key)
        self.dead = self._find_dead()

    def fitting(self, req: Requirement) -> list[Candidate]:
        """Allowed candidates that satisfy ``req`` (by name, else by ``provides``)."""
        pool = self.by_key.get(req.key) or self.providers.get(req.name, [])
        return [
            c
            for c in pool
            if c.promotion_state in self.allowed and req.constraint.allows(c.version)
        ]

    def _find_dead(self) -> dict[Candidate, tuple[Requirement, Candidate | None]]:
        """Candidates in no solution: a requirement of theirs is met only by dead ones.

        Static, so computed once: it spares the search from retrying the same dead end
        under every version of every module above it. Each value is the requirement and
        the best candidate that would have met it (None: nothing would), marked earlier.
        """
        dead: dict[Candidate, tuple[Requirement, Candidate | None]] = {}
        alive = [c for vs in self.by_key.values() for c in vs if c.promotion_state in self.allowed]
        memo: dict[Requirement, list[Candidate]] = {}  # many versions repeat requirements
        changed = True
        while changed:  # each pass marks at least one more, or stops
            changed = False
            for c in alive:
                for r in c.requires if c not in dead else ():
                    fits = memo[r] if r in memo else memo.setdefault(r, self.fitting(r))
                    if all(f in dead for f in fits):
                        dead[c] = (r, fits[0] if fits else None)
                        changed = True
                        break
        return dead

    def explain_dead(self, chain: Chain, fits: Sequence[Candidate]) -> str:
        """``fits`` would meet ``chain`` but all are dead: show why for the best one."""
        full = list(chain)
        nxt: Candidate | None = fits[0]
        while nxt is not None:  # ends: each reason names a candidate marked dead earlier
            r, following = self.dead[nxt]
            full.append(Link(nxt, r))
            nxt = following
        last = full[-1].requirement
        if last.key in self.by_key:
            text = f"{self.chain_text(tuple(full))}: no version satisfies it "
            text += self.available(last.key, last)
        else:
            text = self.explain_virtual(tuple(full))
        if len(fits) > 1:
            text += f"\n(and {len(fits) - 1} lower-ranked candidate(s) that fit fail too)"
        return text

    def enqueue(self, st: _State, chain: Chain) -> None:
        is_real = chain[-1].requirement.key in self.by_key
        (st.real if is_real else st.virtual).append(chain)

    def chain_text(self, chain: Chain) -> str:
        return describe_chain(chain, self.label)

    def advance(self, st: _State) -> _Choice | _Failure | None:
        """Settle requirements that need no decision; stop at a decision or a failure."""
        while st.real or st.virtual:
            chain = st.real.popleft() if st.real else st.virtual.popleft()
            req = chain[-1].requirement
            if req.key not in self.by_key:
                provs = self.virtual_options(st, req)
                options = tuple(c for c in provs if c not in self.dead)
                # Providers already chosen decide which options exist.
                cause = st.cause(chain) | {
                    i for k, i in st.decided.items() if req.name in st.chosen[k].provides
                }
                if options:
                    return _Choice(chain, options, cause)
                if provs:
                    return _Failure(self.explain_dead(chain, provs), cause)
                return _Failure(self.explain_virtual(chain), cause)
            current = st.chosen.get(req.key)
            if current is None:
                pending = [chain] + [p for p in st.real if p[-1].requirement.key == req.key]
                fits = [
                    c
                    for c in self.by_key[req.key]
                    if c.promotion_state in self.allowed
                    and all(p[-1].requirement.constraint.allows(c.version) for p in pending)
                ]
                options = tuple(c for c in fits if c not in self.dead)
                if options:
                    return _Choice(chain, options, st.cause(*pending))
                if fits:
                    return _Failure(self.explain_dead(chain, fits), st.cause(*pending))
                message, culprits = self.explain_none(pending)
                return _Failure(message, st.cause(*culprits))
            if not req.constraint.allows(current.version):
                return _Failure(
                    f"conflicting requirements on {req.key}: {current.version} was chosen for\n"
                    f"  {self.chain_text(st.chains[req.key])}\n"
                    f"  but {self.chain_text(chain)} does not allow it",
                    st.cause(chain) | {st.decided[req.key]},
                )
            failure = self.link(st, chain, current, None)
            if failure:
                return failure
        return None

    def virtual_options(self, st: _State, req: Requirement) -> tuple[Candidate, ...]:
        fitting = self.fitting(req)
        # A provider already in the solution first; never a second version of a module.
        already = [c for c in fitting if st.chosen.get(c.key) == c]
        fresh = [c for c in fitting if c.key not in st.chosen]
        return tuple(already + fresh)

    def choose(self, st: _State, frame: int, chain: Chain, c: Candidate) -> _Failure | None:
        """Apply decision ``frame``: ``c`` meets the requirement at the end of ``chain``."""
        if c.key not in st.chosen:
            st.chosen[c.key] = c
            st.chains[c.key] = chain
            st.decided[c.key] = frame
            for r in c.requires:
                self.enqueue(st, (*chain, Link(c, r)))
        virtual = chain[-1].requirement.key != c.key
        return self.link(st, chain, c, frame if virtual else None)

    def link(self, st: _State, chain: Chain, target: Candidate, via: int | None) -> _Failure | None:
        """Record requirer → target; a requirement cycle is a failure."""
        requirer = chain[-1].requirer
        source = _ROOT if requirer is None else requirer.key
        if target.key not in st.edges.get(source, ()):
            st.edges[source] = (*st.edges.get(source, ()), target.key)
        why = st.cause(chain) | {st.decided[target.key]} | ({via} if via is not None else set())
        st.edge_why[source, target.key] = st.edge_why.get((source, target.key), why) | why
        path = _path(st.edges, target.key, source) if requirer is not None else None
        if path is None:
            return None
        cycle = [source, *path]  # source → target → ... → source
        cause = frozenset().union(*(st.edge_why[e] for e in itertools.pairwise(cycle)))
        start = cycle.index(min(cycle[:-1]))
        loop = cycle[start:-1] + cycle[:start]
        text = " → ".join(str(st.chosen[k]) for k in loop) + f" → {loop[0]}"
        return _Failure(
            f"{self.chain_text(chain)}: requirement cycle {text}; "
            "modules must not require each other in a loop, drop one of these requirements",
            cause,
        )

    def available(self, key: str, req: Requirement | None) -> str:
        versions = list(reversed(self.by_key[key]))
        shown = [
            f"{c.version} {c.promotion_state}"
            + (
                " — not in an allowed state"
                if req is not None
                and c.promotion_state not in self.allowed
                and req.constraint.allows(c.version)
                else ""
            )
            for c in versions[-_MAX_LISTED:]
        ]
        older = len(versions) - len(shown)
        return (
            f"(available: {f'… {older} older, ' if older else ''}{', '.join(shown)}; "
            f"allowed states: {', '.join(sorted(self.allowed))})"
        )

    def explain_none(self, pending: list[Chain]) -> tuple[str, list[Chain]]:
        """Why no version fits ``pending``, and the fewest requirements that say so."""
        key = pending[0][-1].requirement.key
        usable = [c for c in self.by_key[key] if c.promotion_state in self.allowed]
        for chain in pending:
            req = chain[-1].requirement
            if not any(req.constraint.allows(c.version) for c in usable):
                text = f"{self.chain_text(chain)}: no version satisfies it "
                return text + self.available(key, req), [chain]
        for i, a in enumerate(pending):
            for b in pending[i + 1 :]:
                ra, rb = a[-1].requirement, b[-1].requirement
                if not any(
                    ra.constraint.allows(c.version) and rb.constraint.allows(c.version)
                    for c in usable
                ):
                    return (
                        f"conflicting requirements on {key}: no version satisfies both\n"
                        f"  {self.chain_text(a)}\n  and {self.chain_text(b)}\n"
                        f"  {self.available(key, None)}"
                    ), [a, b]
        listed = "\n".join(f"  {self.chain_text(p)}" for p in pending)
        return (
            f"conflicting requirements on {key}: no version satisfies all of\n{listed}\n"
            f"  {self.available(key, None)}"
        ), pending

    def explain_virtual(self, chain: Chain) -> str:
        req = chain[-1].requirement
        provs = self.providers.get(req.name, [])
        if not provs:
            return (
                f"{self.chain_text(chain)}: unknown module {req.key}: no candidate has that "
                f"name and none provides {req.name!r}; check the spelling or publish it"
            )
        listed = ", ".join(
            f"{c} {c.promotion_state}"
            + (" — not in an allowed state" if c.promotion_state not in self.allowed else "")
            for c in provs[:_MAX_LISTED]
        )
        return (
            f"{self.chain_text(chain)}: no module named {req.key}, and no provider of "
            f"{req.name!r} satisfies it (providers: {listed}; "
            f"allowed states: {', '.join(sorted(self.allowed))})"
        )


def _path(edges: Mapping[str, tuple[str, ...]], start: str, goal: str) -> list[str] | None:
    """A path start → … → goal in ``edges`` (inclusive), or None; iterative DFS."""
    parent: dict[str, str | None] = {start: None}
    stack = [start]
    while stack:
        node = stack.pop()
        if node == goal:
            path = [node]
            while (prev := parent[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        for nxt in edges.get(node, ()):
            if nxt not in parent:
                parent[nxt] = node
                stack.append(nxt)
    return None


def _install_order(
    chosen: Mapping[str, Candidate], deps: Mapping[str, tuple[str, ...]]
) -> tuple[Candidate, ...]:
    # Kahn's algorithm with a heap, so ties are broken by owner/name: deterministic.
    waiting = {k: len(deps[k]) for k in chosen}
    users: dict[str, list[str]] = {}
    for k, targets in deps.items():
        for t in targets:
            users.setdefault(t, []).append(k)
    ready = [k for k, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[Candidate] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(chosen[k])
        for u in users.get(k, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    assert len(order) == len(chosen), "cycles are rejected during the search"
    return tuple(order)


def _backjump(frames: list[_Frame], cause: set[int]) -> None:
    """Drop decisions the failure does not depend on; charge the rest to the latest."""
    latest = max(cause, default=-1)
    del frames[latest + 1 :]
    if frames:
        frames[-1].conflict |= cause - {latest}


def _report(failures: list[str]) -> str:
    others = list(dict.fromkeys(failures[1:]))
    others = [f for f in others if f != failures[0]]
    text = failures[0]
    if others:
        shown = others[:_MAX_OTHER_FAILURES]
        text += "\nother choices failed too:\n" + "\n".join(f"- {f}" for f in shown)
        if len(others) > len(shown):
            text += f"\n(and {len(others) - len(shown)} more)"
    return text


def resolve(
    roots: Sequence[Requirement],
    candidates: Iterable[Candidate],
    *,
    allowed_states: frozenset[str] = DEFAULT_ALLOWED_STATES,
    max_steps: int = 100_000,
    root_label: str = "template",
) -> Resolution:
    """Choose one version of every module ``roots`` need, transitively.

    Raises ResolutionError with the chain of requirements that cannot be met, or when
    the search takes more than ``max_steps`` decisions. ``root_label`` names the roots'
    owner in messages.
    """
    search = _Search(candidates, allowed_states, root_label)
    st = _State()
    for r in roots:
        search.enqueue(st, (Link(None, r),))
    failures: list[str] = []
    frames: list[_Frame] = []  # frames[i] is decision i; its options are tried in order
    outcome = search.advance(st)
    steps = 0
    while outcome is not None:
        if isinstance(outcome, _Choice):
            frames.append(_Frame(st, outcome.chain, iter(outcome.options), set(outcome.cause)))
        else:
            logger.debug("dead end: %s", outcome.message)
            failures.append(outcome.message)
            _backjump(frames, set(outcome.cause))
        while frames and (option := next(frames[-1].options, None)) is None:
            # Every option of the latest decision failed: its conflict set is the cause.
            done = frames.pop()
            _backjump(frames, done.conflict - {len(frames)})
        if not frames:
            raise ResolutionError(_report(failures))
        steps += 1
        if steps > max_steps:
            first = failures[0] if failures else "(no dead end yet)"
            raise ResolutionError(
                f"dependency search abandoned after {max_steps} steps (max_steps) without a "
                f"solution; first problem met:\n{first}\n"
                "pin narrower constraints or raise max_steps"
            )
        assert option is not None  # the loop above stops only at an option
        frame = frames[-1]
        st = frame.state.copy()
        outcome = search.choose(st, len(frames) - 1, frame.chain, option) or search.advance(st)
    deps = {k: tuple(sorted(st.edges.get(k, ()))) for k in st.chosen}
    logger.debug("resolved %d modules in %d steps", len(st.chosen), steps)
    return Resolution(
        chosen=dict(sorted(st.chosen.items())),
        order=_install_order(st.chosen, deps),
        dependencies=deps,
        chains=dict(sorted(st.chains.items())),
        root_label=root_label,
    )
