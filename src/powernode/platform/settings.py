"""Platform settings: defaults < settings file (TOML) < environment < explicit overrides.

The settings file is TOML (stdlib ``tomllib``, no extra dependency), one flat
table::

    data_dir = "/var/lib/powernode"
    database_url = "postgresql://powernode@127.0.0.1/powernode"
    max_body_bytes = 1048576

Environment variables are the upper-cased keys prefixed ``POWERNODE_``
(``POWERNODE_DATABASE_URL``, ``POWERNODE_DATA_DIR`` ...). The settings object
is frozen: the app factory reads it once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from powernode.configmerge import merge
from powernode.errors import ConfigError

ENV_PREFIX = "POWERNODE_"
DEFAULT_DATA_DIR = Path("/var/lib/powernode")
QEMU_HOST = "10.0.2.2"  # QEMU user networking: the host's loopback, as a guest dials it


class Settings(BaseModel):
    """Everything the platform process needs to start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = DEFAULT_DATA_DIR
    # Empty means the embedded default: SQLite file ``<data_dir>/platform.db`` (WAL).
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=1, le=65535)
    # Request bodies above this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    # Apply pending migrations when the app starts (``platform serve``).
    migrate_on_start: bool = True
    # Key that seals module webhook secrets at rest; created on first use.
    secret_key_file: Path | None = None
    # Where module artifacts are ingested from: an OCI layout dir or http(s)://host[:port]
    # (empty: no registry, the ingest worker only runs its sensors).
    registry: str = ""
    # PEM roots keyless (certificate) signatures must chain to (the CI's Fulcio root).
    cosign_roots_file: Path | None = None
    # Keyless trust (issue 13 item 10): the transparency log key(s) whose signed
    # entry timestamps prove when a module was signed; without one keyless modules
    # are refused unless cosign_insecure_ignore_tlog checks certificates at now.
    cosign_tlog_keys_file: Path | None = None
    cosign_insecure_ignore_tlog: bool = False
    # URL prefixes the platform may fetch an OSV vulnerability feed from (issue 18);
    # empty: feeds are only sent inline (`powernode supply import-feed FILE`).
    vulnerability_feed_urls: tuple[str, ...] = ()
    # Seconds between registry polls of the ingest worker (seed 003: "wait 60 s").
    ingest_poll_seconds: float = Field(default=60.0, ge=0.1, le=86_400)
    # TLS (tlsserve.py). False: plain HTTP, for the operator API on loopback or behind a
    # TLS-terminating proxy. True: HTTPS, client certificates from the node CA optional.
    tls: bool = False
    # The server's certificate and key (PEM). Unset with tls = true: a self-signed platform
    # CA and a server certificate for ``host`` are made under <data_dir>/pki (pki_server.py).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # TCP peers (IPs or CIDRs) whose X-Client-Cert header (nginx $ssl_client_escaped_cert)
    # is used as the client certificate; it is still verified against the node CA.
    trusted_proxies: tuple[str, ...] = ()
    node_cert_lifetime_days: int = Field(default=30, ge=1, le=825)
    bootstrap_token_ttl_seconds: int = Field(default=3600, ge=60, le=30 * 86_400)
    # Per-node limits of the node API, shared by every platform process (docs/node-api.md):
    # one certificate rotation per interval (0: no limit); events, a token bucket of
    # ``node_events_burst`` refilled at ``node_events_per_second`` (0: no limit). The burst
    # holds at least one full batch (500 events).
    node_rotate_min_interval_seconds: float = Field(default=60.0, ge=0, le=86_400)
    # 100/s and 10,000: an agent draining a full spool (100,000 events) after an outage
    # is done in about 15 minutes; a runaway node stays at 100 rows a second.
    node_events_per_second: float = Field(default=100.0, ge=0, le=1_000_000)
    node_events_burst: float = Field(default=10_000.0, ge=500, le=10_000_000)

    # Connections each process keeps open to PostgreSQL, and how many more it may open
    # under a burst, closed when returned (db/session.py; docs/deploy.md "Connection
    # pools"). 40 + 0: as many as the request thread pool runs at once, none churned.
    # SQLite ignores both.
    db_pool_size: int = Field(default=40, ge=1, le=1000)
    db_pool_overflow: int = Field(default=0, ge=0, le=1000)
    # Retention (services/retention.py, docs/deploy.md "Retention"), run by the worker:
    # rows older than *_days go (0: kept whatever their age), and past *_max_rows the
    # oldest go (0: no cap). Deleted in batches of retention_batch_size rows, each its
    # own short transaction, so writers wait at most one batch.
    retention_events_days: float = Field(default=30.0, ge=0, le=36_500)
    retention_events_max_rows: int = Field(default=0, ge=0)
    retention_audit_days: float = Field(default=365.0, ge=0, le=36_500)
    retention_audit_max_rows: int = Field(default=0, ge=0)
    retention_deliveries_days: float = Field(default=30.0, ge=0, le=36_500)
    retention_deliveries_max_rows: int = Field(default=0, ge=0)
    retention_batch_size: int = Field(default=1000, ge=10, le=100_000)
    # Batches per table per worker round (the rest waits for the next round).
    retention_max_batches: int = Field(default=100, ge=1, le=100_000)

    # Where instances run (services/providers.py, docs/qemu-provider.md): "recording"
    # starts nothing; "qemu" boots each instance's kernel-initrd under QEMU on this host.
    provider: Literal["recording", "qemu"] = "recording"
    # The kernel-initrd image: a directory holding kernel, initrd and cmdline (empty:
    # <data_dir>/images/kernel-initrd/amd64). Also what netboot serves.
    image_dir: Path | None = None
    # The qemu provider's per-instance state (claims, disks, consoles); empty: <data_dir>/instances.
    qemu_state_dir: Path | None = None
    qemu_memory_mb: int = Field(default=512, ge=64, le=1 << 20)
    qemu_vcpus: int = Field(default=1, ge=1, le=256)
    qemu_arch: str = Field(default="x86_64", pattern=r"^[a-z0-9_]+$")
    qemu_machine: str = Field(default="q35", pattern=r"^[A-Za-z0-9_.,=-]+$")
    # auto: KVM only when a probe boot under it prints the kernel banner, else TCG.
    qemu_accel: Literal["auto", "kvm", "tcg"] = "auto"
    qemu_firmware: Path | None = None
    qemu_binary: str = ""
    qemu_persist_disk_mb: int = Field(default=1024, ge=16, le=1 << 22)
    # A module store (publish.store.ModuleStore layout) the first module sets come from.
    qemu_boot_store: Path | None = None
    # The platform's URL as a guest sees it (empty: http(s)://10.0.2.2:<port>, QEMU user
    # networking's address of the host) and the CA it pins (empty: the embedded platform CA
    # when tls is on, else none).
    guest_platform_url: str = ""
    guest_ca_file: Path | None = None
    # The module registry as a guest sees it (the agent's modules_registry, in the seed
    # bundle; with registry's own host[:port] as modules_registry_name when they differ,
    # since signatures name that). Empty: ``registry`` when it is an http(s) URL, its
    # loopback host written as 10.0.2.2 (QEMU user networking); none for a directory.
    guest_modules_registry: str = ""

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        # POWERNODE_TRUSTED_PROXIES="10.0.0.1, 10.1.0.0/16"; TOML gives a list.
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as e:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from e
        return value

    @field_validator("retention_events_days", "retention_audit_days", "retention_deliveries_days")
    @classmethod
    def _check_retention_days(cls, value: float) -> float:
        # A row younger than a day may still be needed: an agent resends its unacknowledged
        # events (their ids refuse duplicates), a webhook's delivery row refuses its replay.
        if 0 < value < 1:
            raise ValueError(f"{value} days: keep rows at least 1 day, or 0 to keep them all")
        return value

    @field_validator(
        "retention_events_max_rows", "retention_audit_max_rows", "retention_deliveries_max_rows"
    )
    @classmethod
    def _check_retention_rows(cls, value: int) -> int:
        if 0 < value < 1000:
            raise ValueError(f"{value} rows: keep at least 1,000 rows, or 0 for no cap")
        return value

    @property
    def pki_dir(self) -> Path:
        """Node CA, and the embedded platform CA and server identity."""
        return self.data_dir / "pki"

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'platform.db'}"

    @property
    def effective_image_dir(self) -> Path:
        return self.image_dir or self.data_dir / "images" / "kernel-initrd" / "amd64"

    @property
    def effective_qemu_boot_store(self) -> Path:
        return self.qemu_boot_store or self.data_dir / "store"

    @property
    def effective_qemu_state_dir(self) -> Path:
        return self.qemu_state_dir or self.data_dir / "instances"

    @property
    def effective_guest_platform_url(self) -> str:
        if self.guest_platform_url:
            return self.guest_platform_url.rstrip("/")
        return f"{'https' if self.tls else 'http'}://{QEMU_HOST}:{self.port}"

    @property
    def effective_guest_modules_registry(self) -> str:
        if self.guest_modules_registry:
            return self.guest_modules_registry.rstrip("/")
        url = urlsplit(self.registry)
        if url.scheme not in ("http", "https") or not url.hostname:
            return ""  # none, or a layout directory on this host: no guest reads it
        host = url.hostname
        if host in ("localhost", "::1") or host.startswith("127."):
            host = QEMU_HOST
        return f"{url.scheme}://{host}" + (f":{url.port}" if url.port else "")

    @property
    def effective_guest_modules_registry_name(self) -> str:
        """``registry``'s host[:port] (what signatures name) when a guest dials it at
        another address (the agent's modules_registry_name); empty when they are one."""
        url = urlsplit(self.registry)
        guest = urlsplit(self.effective_guest_modules_registry)
        if url.scheme not in ("http", "https") or not guest.netloc:
            return ""
        return url.netloc if url.netloc != guest.netloc else ""

    def guest_ca_pem(self) -> str:
        """The CA certificate(s) a guest pins, PEM; empty when there is none."""
        if self.guest_ca_file is not None:
            path = self.guest_ca_file
        elif self.tls and self.tls_cert_file is None:
            path = self.pki_dir / "platform-ca.pem"
            if not path.is_file():  # made by the first TLS start (pki_server.py)
                return ""
        else:
            return ""
        try:
            return path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the guests' CA: {e.strerror}") from e

    @property
    def effective_secret_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"


_FIELDS = tuple(Settings.model_fields)


def load_settings(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: object,
) -> Settings:
    """Merge defaults, ``file``, ``env`` (default ``os.environ``) and ``overrides``.

    ``overrides`` whose value is None are ignored, so CLI flags that were not
    given do not mask the file or the environment.
    """
    values = merge(
        _FIELDS,
        file=file,
        env=env,
        env_prefix=ENV_PREFIX,
        overrides=overrides,
        what="settings file",
    ).values
    try:
        return Settings.model_validate(values)
    except ValidationError as e:
        where = str(file) if file else "settings"
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{where}: {details}") from e
