"""Where a node's modules live and where their union is mounted.

``root`` is the directory the union is mounted on: ``/`` on a booted node, a
directory in tests (the same code either way). ``state`` holds the shared
store (docs/artifact.md) and the agent's state (``agent/``). ``run`` holds
mount points and is itself a private tmpfs the agent mounts (default
``<state>/run``): private, so mounts under it neither propagate to other
mount namespaces nor block ``move_mount``; tmpfs, so it is empty after a
reboot, like ``/run``. The ephemeral upper layer lives in it too; give
``upper`` for a persistent upper directory instead, or ``writable=False`` for
a read-only union.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from powernode.agent.modules.integrity import Seals, current_boot_id
from powernode.agent.modules.state import StateFile
from powernode.errors import ConfigError
from powernode.node import layout as names
from powernode.node.store import ModuleStore

# overlayfs splits lowerdir on ':' and options on ',' (Documentation/filesystems/overlayfs.rst)
_FORBIDDEN = (":", ",", "\\", "\n")


def _check(path: Path, what: str) -> Path:
    if not path.is_absolute():
        raise ConfigError(f"{what} {str(path)!r}: must be an absolute path")
    bad = [c for c in _FORBIDDEN if c in str(path)]
    if bad:
        raise ConfigError(f"{what} {str(path)!r}: may not contain {bad[0]!r} (overlayfs options)")
    return path


@dataclass(frozen=True)
class NodeLayout:
    root: Path
    state: Path
    run: Path | None = None
    upper: Path | None = None  # persistent upper directory; None: tmpfs under run
    writable: bool = True
    tmpfs_size: str = "25%"  # of RAM, for run (and so for the ephemeral upper)
    verity: Literal["auto", "off", "on", "require"] = "auto"  # the overlay's verity= option
    boot_id: str | None = None  # None: the kernel's; tests inject one to simulate a reboot

    def __post_init__(self) -> None:
        _check(self.root, "root")
        _check(self.state, "state directory")
        _check(self.run_dir, "run directory")
        if self.upper is not None:
            _check(self.upper, "upper directory")

    @property
    def run_dir(self) -> Path:
        return self.run if self.run is not None else self.state / names.RUN_DIR

    @property
    def store(self) -> ModuleStore:
        return ModuleStore(self.state)

    @property
    def agent_dir(self) -> Path:
        return self.state / names.AGENT_DIR

    @property
    def state_file(self) -> StateFile:
        return StateFile(self.agent_dir)

    def seals(self) -> Seals:
        boot = self.boot_id if self.boot_id is not None else current_boot_id()
        return Seals(self.agent_dir / names.SEALS_DIR, boot)
