"""The agent's composition root: its config read, and its objects built from it.

``powernode-agent`` and its ``modules`` subcommands only call these; they
wire nothing themselves. Each builder takes the :class:`AgentConfig` and
returns one object; :func:`run_service` is the whole ``service`` command.
"""

from __future__ import annotations

from pathlib import Path

from powernode.agent.certstore import CertStore, Credentials
from powernode.agent.config import DEFAULT_CONFIG_FILE, AgentConfig, load_config
from powernode.agent.lifecycle import Clock, StopSignal, SystemClock, install_signal_handlers
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import PublishPuller
from powernode.agent.modules.service import ModuleService
from powernode.agent.modules.trust import PolicyReader
from powernode.agent.nodetasks import register_node_tasks
from powernode.agent.runtime import HostFacts, Runtime
from powernode.agent.security import harden
from powernode.agent.spool import Spool
from powernode.agent.tasks import ThreadExecutor, default_registry
from powernode.agent.transport import Backoff, NodeClient, tls_context
from powernode.node.fields import JSON
from powernode.systemd import Notifier

__all__ = [
    "build_module_service",
    "build_node_client",
    "build_puller",
    "build_runtime",
    "load_agent_config",
    "node_layout",
    "policy_reader",
    "run_service",
]


def load_agent_config(
    file: Path | None,
    *,
    state_dir: Path | None = None,
    platform_url: str | None = None,
    modules_root: Path | None = None,
) -> AgentConfig:
    """The agent's config: ``file``, else /etc/powernode/agent.toml if it exists; flags win."""
    if file is None and DEFAULT_CONFIG_FILE.exists():
        file = DEFAULT_CONFIG_FILE
    return load_config(
        file, None, state_dir=state_dir, platform_url=platform_url, modules_root=modules_root
    )


def node_layout(cfg: AgentConfig) -> NodeLayout:
    """Where the node keeps its modules and mounts their union."""
    return NodeLayout(
        root=cfg.modules_root.absolute(), state=cfg.state_dir.absolute(), upper=cfg.modules_upper
    )


def policy_reader(cfg: AgentConfig, clock: Clock | None = None) -> PolicyReader:
    """Reads trust policies with the config's certificate roots and transparency-log keys."""
    return PolicyReader.from_file(
        cfg.cosign_roots_file,
        cfg.cosign_tlog_keys_file,
        insecure_ignore_tlog=cfg.cosign_insecure_ignore_tlog,
        clock=clock.now if clock is not None else None,
    )


def build_puller(
    cfg: AgentConfig, *, clock: Clock | None = None, unsafe_no_signature: bool = False
) -> PublishPuller:
    """Checks each module's signature under its policy, then pulls it."""
    return PublishPuller(
        policies=policy_reader(cfg, clock),
        unsafe_no_signature=unsafe_no_signature,
        default_registry=cfg.modules_registry,
        registry_name=cfg.modules_registry_name,
    )


def build_module_service(cfg: AgentConfig, spool: Spool, clock: Clock) -> ModuleService:
    """The module service the loop restores and syncs; its events go to ``spool``."""

    def emit(kind: str, severity: str, payload: dict[str, JSON]) -> None:
        spool.append(kind, severity, payload, clock.now())

    return ModuleService(node_layout(cfg), build_puller(cfg, clock=clock), emit)


def build_node_client(
    cfg: AgentConfig,
    creds: Credentials | None = None,
    *,
    clock: Clock | None = None,
    stop: StopSignal | None = None,
) -> NodeClient:
    """A node API client with the node's certificate (``creds``, default: the stored ones).

    With a ``stop`` signal (the service) it backs off by the config and stops
    waiting when the signal is set; without (one-shot commands) it uses the
    client's defaults.
    """
    url = cfg.require_platform()
    if creds is None:
        creds = CertStore(cfg.pki_dir).load()
    tls = tls_context(creds.platform_ca_file, creds.cert_file, creds.key_file)
    if stop is None:
        return NodeClient(
            url,
            tls=tls,
            clock=clock,
            attempts=cfg.request_attempts,
            timeout=cfg.request_timeout_seconds,
            max_response_bytes=cfg.max_response_bytes,
        )
    return NodeClient(
        url,
        tls=tls,
        clock=clock,
        stop=stop.event,
        backoff=Backoff(cfg.backoff_base_seconds, cfg.backoff_cap_seconds),
        attempts=cfg.request_attempts,
        timeout=cfg.request_timeout_seconds,
        max_response_bytes=cfg.max_response_bytes,
    )


def build_runtime(cfg: AgentConfig, stop: StopSignal | None = None) -> Runtime:
    """The agent's loop with everything it uses; ``modules.sync`` tasks run its module sync."""
    cfg.require_platform()
    clock = SystemClock()
    stop = stop if stop is not None else StopSignal()

    def client_factory(creds: Credentials) -> NodeClient:
        return build_node_client(cfg, creds, clock=clock, stop=stop)

    spool = Spool(
        cfg.spool_file,
        max_events=cfg.spool_max_events,
        max_payload_bytes=cfg.event_max_payload_bytes,
    )
    modules = build_module_service(cfg, spool, clock)
    tasks = default_registry()
    store = CertStore(cfg.pki_dir)
    runtime = Runtime(
        cfg,
        store=store,
        spool=spool,
        client_factory=client_factory,
        executor=ThreadExecutor(tasks, cfg.max_in_flight),
        clock=clock,
        stop=stop,
        facts=HostFacts(cfg.host_root, cfg.modules_dir, modules.layout),
        modules=modules,
        notifier=Notifier(),
    )
    tasks.register("modules.sync", runtime.modules_task)
    register_node_tasks(
        tasks,
        cfg=cfg,
        store=store,
        creds=lambda: runtime.creds,
        factory=client_factory,
        clock=clock,
    )
    return runtime


def run_service(cfg: AgentConfig) -> int:
    """``powernode-agent service``: run until SIGTERM/SIGINT, drain, return the exit status."""
    if cfg.confine_self:
        harden()  # capabilities, seccomp, no-new-privileges (agent/security.py)
    stop = StopSignal()
    install_signal_handlers(stop)
    runtime = build_runtime(cfg, stop)
    code = runtime.run()
    runtime.spool.close()
    return code
