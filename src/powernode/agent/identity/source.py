"""What every identity source implements, and what the cascade hands it.

A source is one class with a ``name`` and a ``probe(ctx)`` that returns
``(instance_id, detail)`` or raises ``SourceMiss`` saying why not (in the
spirit of cloud-init's datasources: a cheap local check gates every costly
fetch). ``ProbeContext`` carries the config, the network deadline and the
warnings list, so sources keep no state of their own.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from powernode.agent.identity.config import IdentityConfig
from powernode.agent.identity.model import Outcome
from powernode.errors import PowernodeError

log = logging.getLogger(__name__)

# sysfs/procfs values we read are a line or two; refuse anything bigger.
MAX_HOST_FILE_BYTES = 64 * 1024


class SourceMiss(PowernodeError):
    """A source gave no identity; ``outcome`` and ``reason`` go into the trail."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        self.outcome = outcome
        self.reason = reason
        super().__init__(f"{outcome.value}: {reason}")


@dataclass
class ProbeContext:
    """Per-cascade state shared by the sources: config, deadline, warnings."""

    config: IdentityConfig
    in_container: bool
    # Monotonic time (config.clock) after which no network probe may start or continue.
    network_deadline: float
    warnings: list[str] = field(default_factory=list)

    def path(self, absolute: str | Path) -> Path:
        return self.config.host_path(absolute)

    def warn(self, message: str) -> None:
        log.warning("identity: %s", message)
        self.warnings.append(message)


class Source(Protocol):
    @property
    def name(self) -> str: ...

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        """Return ``(instance_id, detail)``, or raise ``SourceMiss``."""
        ...


def read_host_file(path: Path, limit: int = MAX_HOST_FILE_BYTES) -> bytes | None:
    """Read a small host file; ``None`` if it does not exist, ``SourceMiss`` on other errors.

    Missing is normal (no DMI on this machine, no fw-cfg item), so it is not an
    error. Permission trouble is reported: product_uuid, product_serial and
    fw-cfg ``raw`` are mode 0400, so a non-root agent meets EACCES there.
    """
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except PermissionError as e:
        raise SourceMiss(
            Outcome.ERROR, f"{path}: permission denied (mode 0400; run the agent as root)"
        ) from e
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENXIO, errno.EIO):
            raise SourceMiss(Outcome.ERROR, f"{path}: cannot be read: {e.strerror}") from e
        raise SourceMiss(Outcome.ERROR, f"{path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise SourceMiss(Outcome.INVALID, f"{path}: larger than {limit} bytes; refusing it")
    return data


def read_host_text(path: Path, limit: int = MAX_HOST_FILE_BYTES) -> str | None:
    """``read_host_file`` decoded as UTF-8; undecodable content is an INVALID miss."""
    data = read_host_file(path, limit)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceMiss(
            Outcome.INVALID, f"{path}: not UTF-8 text (byte {e.start}: {data[e.start]:#04x})"
        ) from e


def detect_container(config: IdentityConfig) -> bool:
    """True when the agent runs in a container (same markers as systemd-detect-virt -c)."""
    if config.in_container is not None:
        return config.in_container
    markers = ("/run/systemd/container", "/.dockerenv", "/run/.containerenv")
    return any(config.host_path(m).exists() for m in markers)
