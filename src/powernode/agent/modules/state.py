"""The agent's attach state: what is attached and mounted, persisted atomically.

``<state>/agent/modules.json`` records every attached module (name, composefs
digest, effective priority, version, artifact reference), the generation of
the union last mounted, and the last refusal per module, so that a restarted
agent remounts what it had attached (verifying again) and ``status`` can say
why a module is not mounted. Written with a temp file in the same directory,
fsync and ``os.replace`` (never half-written); changes are serialised by an
exclusive ``flock`` on ``<state>/agent/lock`` between the service loop and
one-off CLI commands.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from powernode.agent.modules.refusal import Refusal
from powernode.agent.pathcheck import check_composition_paths
from powernode.core.composition import Composition
from powernode.durable import write_json
from powernode.errors import ConfigError, DataError
from powernode.node import layout as names
from powernode.node.store import image_digest
from powernode.oci.digest import Digest

STATE_VERSION = 1
MAX_STATE_BYTES = 4 << 20
MAX_COMPOSITION_BYTES = 256 << 20  # a union of a few 100,000 paths
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_module_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"module name {name!r}: use 1-128 letters, digits, '.', '_', '+', '-' "
            "(starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class ModuleSpec:
    """A module to attach: its composefs digest and effective priority (higher wins)."""

    name: str
    digest: str  # "sha256:<hex>"
    priority: int
    version: str = ""
    reference: str = ""  # where it was pulled from, e.g. "<registry>/<owner>/<name>:<version>"

    def __post_init__(self) -> None:
        check_module_name(self.name)
        object.__setattr__(self, "digest", str(image_digest(self.digest)))
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ConfigError(f"module {self.name}: priority must be an integer")

    @property
    def composefs(self) -> Digest:
        return Digest("sha256", self.hex)

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")  # checked in __post_init__


@dataclass(frozen=True)
class AttachState:
    """Attached modules by name, the union generation, last refusals by module."""

    modules: Mapping[str, ModuleSpec] = field(default_factory=dict)
    generation: int = 0  # of the union last mounted; 0: none
    mounted: tuple[str, ...] = ()  # composefs hex digests of that union, top first
    refusals: Mapping[str, tuple[Refusal, ...]] = field(default_factory=dict)
    # Per attached module, the version attached before its last change: the
    # rollback version, kept in the store by ``modules gc`` (like bootc's rollback
    # deployment) so going back to it pulls nothing.
    previous: Mapping[str, ModuleSpec] = field(default_factory=dict)

    def with_modules(self, modules: Mapping[str, ModuleSpec]) -> AttachState:
        return replace(self, modules=dict(modules))

    def retained(self) -> dict[str, str]:
        """Composefs hex digests ``gc`` keeps, each with why: attached, mounted, rollback."""
        keep: dict[str, str] = {}
        for n, m in sorted(self.previous.items()):
            keep[m.hex] = f"{n} {m.version or '-'} (rollback)"
        for d in self.mounted:
            keep[d] = "mounted"
        for n, m in sorted(self.modules.items()):
            keep[m.hex] = f"{n} {m.version or '-'} (attached)"
        return keep

    def to_json(self) -> dict[str, Any]:  # Any: JSON, checked
        return {
            "version": STATE_VERSION,
            "generation": self.generation,
            "mounted": list(self.mounted),
            "modules": {n: _spec_json(m) for n, m in sorted(self.modules.items())},
            "refusals": {n: [r.to_dict() for r in rs] for n, rs in sorted(self.refusals.items())},
            "previous": {n: _spec_json(m) for n, m in sorted(self.previous.items())},
        }

    @classmethod
    def from_json(cls, doc: Any, source: str) -> AttachState:  # Any: JSON, checked
        try:
            if doc.get("version") != STATE_VERSION:
                raise DataError(f"{source}: state version {doc.get('version')!r} is not 1")
            modules = {n: _spec(n, m) for n, m in doc["modules"].items()}
            previous = {n: _spec(n, m) for n, m in doc.get("previous", {}).items()}
            refusals = {
                n: tuple(Refusal.from_dict(r) for r in rs)
                for n, rs in doc.get("refusals", {}).items()
            }
            generation = doc["generation"]
            mounted = tuple(image_digest(d).hex for d in doc.get("mounted", []))
            if not isinstance(generation, int) or generation < 0:
                raise DataError(f"{source}: generation: expected a non-negative integer")
        except (AttributeError, KeyError, TypeError) as e:
            raise DataError(
                f"{source}: malformed attach state ({e!r}); see docs/agent-modules.md"
            ) from e
        except ConfigError as e:
            raise DataError(f"{source}: {e}") from e
        return cls(modules, generation, mounted, refusals, previous)


def _spec_json(m: ModuleSpec) -> dict[str, Any]:  # Any: JSON, checked
    return {"digest": m.digest, "priority": m.priority, "version": m.version,
            "reference": m.reference}  # fmt: skip


def _spec(name: str, m: Any) -> ModuleSpec:  # Any: JSON, checked
    return ModuleSpec(name, m["digest"], m["priority"], m.get("version", ""),
                      m.get("reference", ""))  # fmt: skip


def next_previous(state: AttachState, target: Mapping[str, ModuleSpec]) -> dict[str, ModuleSpec]:
    """The rollback version of each module in ``target`` once ``target`` replaces ``state``.

    A module whose digest changes keeps the one it had; an unchanged one keeps
    its rollback version; a module detached loses both (gc may collect them).
    """
    out: dict[str, ModuleSpec] = {}
    for name, want in target.items():
        cur, before = state.modules.get(name), state.previous.get(name)
        if cur is not None and cur.digest != want.digest:
            out[name] = cur
        elif before is not None and before.digest != want.digest:
            out[name] = before
    return out


class StateFile:
    """Load and save :class:`AttachState` at ``<agent dir>/modules.json``."""

    def __init__(self, agent_dir: Path) -> None:
        self.path = agent_dir / names.MODULES_STATE_FILE
        self.lock_path = agent_dir / names.LOCK_FILE

    def load(self) -> AttachState:
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return AttachState()
        if len(raw) > MAX_STATE_BYTES:
            raise DataError(f"{self.path}: larger than {MAX_STATE_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise DataError(
                f"{self.path}: not JSON ({e}); move it aside to start with nothing attached"
            ) from e
        return AttachState.from_json(doc, str(self.path))

    def save(self, state: AttachState) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json(self.path, state.to_json(), mode=0o600)

    @contextlib.contextmanager
    def locked(self, *, timeout: float = 60.0) -> Iterator[None]:
        """Hold the exclusive state lock; ConfigError if another agent holds it too long."""
        with _flock(self.lock_path, fcntl.LOCK_EX, timeout, "the module lock"):
            yield

    @contextlib.contextmanager
    def store_locked(self, *, exclusive: bool, timeout: float = 600.0) -> Iterator[None]:
        """The store lock: shared by pulls (from their first write to the mount that uses
        it), exclusive for ``gc``, so gc never deletes an object a pull just found present
        and skipped. Apart from the state lock, so a long pull never blocks ``status``."""
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        with _flock(self.store_lock_path, mode, timeout, "the store lock (a pull or gc)"):
            yield

    @property
    def store_lock_path(self) -> Path:
        return self.lock_path.with_name(names.STORE_LOCK_FILE)


@contextlib.contextmanager
def _flock(path: Path, mode: int, timeout: float, what: str) -> Iterator[None]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"{path}: another agent process holds {what} for over "
                        f"{timeout:.0f} s; wait for it or stop it"
                    ) from e
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def composition_path(agent_dir: Path) -> Path:
    return agent_dir / names.COMPOSITION_FILE


def load_composition(agent_dir: Path) -> Composition | None:
    """The composition the union follows (``None``: plain priority order)."""
    path = composition_path(agent_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) > MAX_COMPOSITION_BYTES:
        raise DataError(f"{path}: larger than {MAX_COMPOSITION_BYTES} bytes")
    try:
        return check_composition_paths(Composition.from_dict(json.loads(raw)))
    except (ValueError, DataError) as e:
        raise DataError(f"{path}: {e}; move it aside and sync again") from e


def save_composition(agent_dir: Path, composition: Composition) -> None:
    agent_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(composition_path(agent_dir), composition.to_dict(), mode=0o600)
