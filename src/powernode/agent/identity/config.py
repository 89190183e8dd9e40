"""Settings of the identity cascade, with every side effect injectable.

Production defaults point at the real host: ``root=/`` and the link-local
metadata address 169.254.169.254. Tests pass a fake root in ``tmp_path``
and loopback URLs of fake metadata servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from powernode.errors import ConfigError


class CommandResult(NamedTuple):
    """What an external command did; ``returncode`` 127 means it is not installed."""

    returncode: int
    stdout: str
    stderr: str


# Runs argv (never through a shell) with a timeout in seconds.
CommandRunner = Callable[[Sequence[str], float], CommandResult]

# Cascade order of seed 000: cmdline, fw-cfg, cloud metadata, DMI, local file.
DEFAULT_SOURCES: tuple[str, ...] = (
    "cmdline",
    "fwcfg",
    "aws",
    "gcp",
    "azure",
    "digitalocean",
    "hetzner",
    "kubevirt",
    "vsphere",
    "dmi",
    "local",
)

# The link-local metadata address every supported cloud answers on. GCE is
# probed by IP, not by metadata.google.internal: off GCE that name can stall
# in resolver timeouts (IDENTITY_SOURCES.md §4).
LINK_LOCAL_METADATA = "http://169.254.169.254"


def default_command_runner(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run ``argv`` through powernode.run, mapping a missing tool to exit code 127."""
    import subprocess  # noqa: PLC0415 - only the production runner needs it

    from powernode.run import run  # noqa: PLC0415

    try:
        proc = run(list(argv), check=False, timeout=timeout)
    except FileNotFoundError:
        return CommandResult(127, "", f"{argv[0]}: command not found")
    except OSError as e:  # e.g. not executable
        return CommandResult(126, "", f"{argv[0]}: cannot run: {e.strerror or e}")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{argv[0]}: timed out after {timeout:g} s")
    return CommandResult(
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


@dataclass(frozen=True)
class IdentityConfig:
    """How to discover the node's identity.

    ``root`` prefixes every /proc, /sys and file path. ``sources`` lists the
    sources to try, in order (a subset of ``DEFAULT_SOURCES``). Timeouts are
    in seconds: ``connect_timeout`` per TCP connect, ``probe_timeout`` for a
    whole metadata probe (all its requests), ``total_timeout`` for every
    network probe of one cascade together. ``probe_without_platform_signal``
    lets cloud sources probe the network even when DMI shows no sign of that
    cloud — off by default, because an ungated probe costs a full timeout on
    an ordinary LAN (IDENTITY_SOURCES.md §14).
    """

    root: Path = Path("/")
    sources: tuple[str, ...] = DEFAULT_SOURCES
    identity_file: Path = Path("/persist/var/lib/powernode/identity.cfg")
    aws_url: str = LINK_LOCAL_METADATA
    gcp_url: str = LINK_LOCAL_METADATA
    azure_url: str = LINK_LOCAL_METADATA
    digitalocean_url: str = LINK_LOCAL_METADATA
    hetzner_url: str = LINK_LOCAL_METADATA
    azure_api_version: str = "2021-02-01"
    # IMDSv2 token lifetime: we need it for a few requests only (1..21600 allowed).
    aws_token_ttl: int = 60
    connect_timeout: float = 0.2
    probe_timeout: float = 1.0
    total_timeout: float = 3.0
    max_response_bytes: int = 64 * 1024
    probe_without_platform_signal: bool = False
    # None: detect (systemd's /run/systemd/container, /.dockerenv, /run/.containerenv).
    in_container: bool | None = None
    vsphere_guestinfo_key: str = "guestinfo.powernode.instance_id"
    command_timeout: float = 2.0
    run_command: CommandRunner = field(default=default_command_runner, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in DEFAULT_SOURCES]
        if unknown:
            raise ConfigError(
                f"identity sources: unknown {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(DEFAULT_SOURCES)}"
            )
        if len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"identity sources: listed twice in {list(self.sources)}")
        for name in ("aws_url", "gcp_url", "azure_url", "digitalocean_url", "hetzner_url"):
            url = getattr(self, name)
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
                raise ConfigError(
                    f"identity {name}: {url!r} must be a plain http://host[:port] base URL "
                    "(metadata services are link-local HTTP)"
                )
        for name in ("connect_timeout", "probe_timeout", "total_timeout", "command_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 60:
                raise ConfigError(f"identity {name}: {value} s is outside (0, 60]")
        if not 1 <= self.aws_token_ttl <= 21600:
            raise ConfigError(
                f"identity aws_token_ttl: {self.aws_token_ttl} is outside 1..21600 "
                "(the range IMDSv2 accepts)"
            )
        if not 1024 <= self.max_response_bytes <= 16 * 1024 * 1024:
            raise ConfigError(
                f"identity max_response_bytes: {self.max_response_bytes} is outside 1 KiB..16 MiB"
            )
        if not self.identity_file.is_absolute():
            raise ConfigError(
                f"identity identity_file: {str(self.identity_file)!r} must be an absolute path "
                "(it is read under root)"
            )
        if not self.vsphere_guestinfo_key.startswith("guestinfo."):
            raise ConfigError(
                f"identity vsphere_guestinfo_key: {self.vsphere_guestinfo_key!r} "
                "must start with 'guestinfo.'"
            )

    def host_path(self, absolute: str | Path) -> Path:
        """``absolute`` (e.g. /proc/cmdline) under ``root``."""
        return self.root / Path(absolute).relative_to("/")
