"""The agent's settings: defaults < config file (TOML) < environment < explicit overrides.

The file is one flat TOML table (stdlib ``tomllib``)::

    platform_url = "https://platform.example:8400"
    platform_ca_file = "/etc/powernode/platform-ca.pem"
    state_dir = "/persist/var/lib/powernode"

Environment variables are the upper-cased keys prefixed ``POWERNODE_AGENT_``.
The object is frozen: the service reads it once at start.

Every limit the agent applies to itself or to what the platform sends lives
here, so an operator can see and change it (python-tuf ``ngclient/config.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from powernode.configmerge import merge
from powernode.errors import ConfigError
from powernode.node.fields import FieldErrors, bounded, build, field_names

# a registry name as references and signatures write it: host or [v6], then :port
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")

ENV_PREFIX = "POWERNODE_AGENT_"
DEFAULT_CONFIG_FILE = Path("/etc/powernode/agent.toml")
# Seed 000: "persists cert at /persist/var/lib/powernode/pki/ (mode 0600)".
DEFAULT_STATE_DIR = Path("/persist/var/lib/powernode")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything ``powernode-agent`` needs; times in seconds."""

    # Base URL of the platform, e.g. https://10.0.0.1:8400 (the node API is under /node_api).
    platform_url: str = ""
    # PEM bundle the platform's TLS server certificate must chain to: the only
    # trust anchor used (the system store is never consulted). Copied into the
    # state dir at enrollment, so later runs need only the state dir.
    platform_ca_file: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    # Root that /proc paths are read under (heartbeat load, mem, boot_id).
    host_root: Path = Path("/")

    # Seed 000: "30s heartbeat tick".
    heartbeat_seconds: float = bounded(30.0, gt=0, le=3600)
    lease_max: int = bounded(4, ge=1, le=100)  # node-api.md: max 1-100
    max_in_flight: int = bounded(4, ge=1, le=256)
    # Seed 000: rotate at 75 % of the certificate's lifetime.
    rotate_at_fraction: float = bounded(0.75, gt=0, lt=1)
    # SIGTERM: how long in-flight tasks may run on before they are failed as retryable.
    drain_seconds: float = bounded(60.0, ge=0, le=3600)

    # Backoff when the platform is unreachable: full jitter (delay drawn
    # uniformly in [0, min(cap, base * 2**n)]), per request and for the loop.
    backoff_base_seconds: float = bounded(1.0, gt=0, le=60)
    backoff_cap_seconds: float = bounded(30.0, gt=0, le=3600)
    request_attempts: int = bounded(3, ge=1, le=10)
    request_timeout_seconds: float = bounded(10.0, gt=0, le=300)
    max_response_bytes: int = bounded(4 << 20, ge=4096, le=64 << 20)

    # Event buffer: node-api.md allows <= 500 events per POST.
    flush_batch: int = bounded(500, ge=1, le=500)
    flush_max_batches: int = bounded(20, ge=1, le=10_000)  # per flush, bounded
    spool_max_events: int = bounded(100_000, ge=100, le=10_000_000)
    event_max_payload_bytes: int = bounded(64 << 10, ge=256, le=1 << 20)

    # Modules (docs/agent-modules.md): how often the loop reconciles with
    # GET /node_api/modules (a `modules.sync` task does it at once), where the
    # union is mounted (`/` on a booted node), the persistent upper directory
    # (None: a tmpfs upper, gone at reboot) and the certificate roots keyless
    # trust policies chain to (key policies need none).
    modules_sync_seconds: float = bounded(60.0, gt=0, le=86400)
    modules_root: Path = Path("/")
    modules_upper: Path | None = None
    cosign_roots_file: Path | None = None
    # Keyless trust: the transparency log key(s) whose signed entry timestamps prove
    # when a signature was made (Rekor's /api/v1/log/publicKey); without one, keyless
    # policies are refused unless cosign_insecure_ignore_tlog checks at now.
    cosign_tlog_keys_file: Path | None = None
    cosign_insecure_ignore_tlog: bool = False
    # The registry for module references that name none, and the URL (so the
    # scheme: http:// for a lab registry) for references naming its host:port;
    # or oci:/ABS/DIR, an OCI image layout directory (image-spec image-layout.md)
    # for references naming no host (docs/agent-modules.md "Module source").
    # Empty: each reference's own host, HTTPS unless loopback (docs/publish.md).
    modules_registry: str = ""
    # The registry's name (host[:port]) as signatures name it, for references naming no
    # host, when modules_registry is another address of it: a mirror, or QEMU's 10.0.2.2
    # for the host's 127.0.0.1:5000. Empty: modules_registry's own host[:port].
    modules_registry_name: str = ""
    # docs/operations.md: where the agent writes its node-exporter textfile
    # (powernode_agent.prom) after every heartbeat cycle; None: not written.
    metrics_textfile_dir: Path | None = None
    # `exec` (agent/nodescripts.py): PEM public key(s) whose NodeScript signatures
    # this node accepts; None: every NodeScript is refused.
    nodescript_keys_file: Path | None = None
    # `service` confines itself at start (agent/security.py): no-new-privileges, every
    # capability it does not need dropped, a seccomp filter. false: none of it (debugging).
    confine_self: bool = True

    def __post_init__(self) -> None:
        url, registry = self.platform_url, self.modules_registry
        if url and not url.startswith("https://"):
            raise ValueError(
                f"platform_url: {url!r} is not an https:// URL; "
                "the node API is served over TLS only"
            )
        layout = registry.startswith("oci:/") and ":" not in registry[4:]
        if registry and not layout and not registry.startswith(("http://", "https://")):
            raise ValueError(
                f"modules_registry: {registry!r}: write the registry as http(s)://host[:port] "
                "or an OCI layout directory as oci:/absolute/path (no ':' in the path)"
            )
        name = self.modules_registry_name
        if name and (not registry.startswith(("http://", "https://")) or not HOST_PORT.match(name)):
            raise ValueError(
                f"modules_registry_name: {name!r}: write the registry's host[:port] as "
                "signatures name it (no scheme, no path), beside an http(s):// modules_registry"
            )
        # Normalised once here (frozen: set through object.__setattr__).
        object.__setattr__(self, "platform_url", url.rstrip("/"))
        object.__setattr__(self, "modules_registry", registry.rstrip("/"))

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def spool_file(self) -> Path:
        return self.state_dir / "spool" / "events.db"

    @property
    def modules_dir(self) -> Path:
        # Where powernode.agent.modules keeps modules.json (attach state).
        return self.state_dir / "agent"

    def require_platform(self) -> str:
        """The platform URL, or a ConfigError that says how to set it."""
        if not self.platform_url:
            raise ConfigError(
                "platform_url is not set: put it in the agent config file "
                f"({DEFAULT_CONFIG_FILE}), set {ENV_PREFIX}PLATFORM_URL or pass --platform-url"
            )
        return self.platform_url


_FIELDS = field_names(AgentConfig)


# The command-line flags that hand load_config its overrides (cli/agent*.py).
_OVERRIDE_FLAGS = {
    "state_dir": "--state-dir",
    "platform_url": "--platform-url",
    "modules_root": "--root",
}


def load_config(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: object,
) -> AgentConfig:
    """Merge defaults, ``file``, ``env`` (default ``os.environ``) and ``overrides``.

    ``overrides`` whose value is None are ignored so CLI flags that were not
    given do not mask the file or the environment.
    """
    merged = merge(
        _FIELDS,
        file=file,
        env=env,
        env_prefix=ENV_PREFIX,
        overrides=overrides,
        what="agent config",
        flags=_OVERRIDE_FLAGS,
    )
    values, source = merged.values, merged.source
    try:
        return build(AgentConfig, values, extra="forbid", lenient=True)
    except FieldErrors as e:
        problems = []
        for field_loc, field_msg in e.errors:
            loc, msg = field_loc, field_msg
            head, sep, rest = msg.partition(": ")
            if not loc and sep and head in values:  # __post_init__ names its field first
                loc, msg = head, rest
            name = loc.split(".", 1)[0]
            if name in source:
                where = source[name] + loc[len(name) :]
            else:  # a check across fields
                where = (f"{file}: {loc}" if loc else str(file)) if file else loc or "agent config"
            problems.append(f"{where}: {msg}")
        raise ConfigError("; ".join(problems)) from e
