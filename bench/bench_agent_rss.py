"""Benchmark: the agent's resident memory after an hour-equivalent of heartbeats.

Run: .venv/bin/python bench/bench_agent_rss.py
An agent runtime (the `service` loop, real mTLS client, SQLite buffer)
runs in a child process on a manual clock, so 120 heartbeats (one hour at
30 s) take seconds, each beat also leasing a task and delivering its
events, against a platform on 127.0.0.1 in this (parent) process. The child
prints its VmRSS after the first beat and after the hour, and VmHWM. The
reference, measured in the same run: a bare child that imports the same
modules and does nothing (the interpreter + libraries floor). Target: agent
RSS <= 50 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BEATS = 120  # one hour at the seed's 30 s heartbeat
TARGET_MB = 50.0
INSTANCE = "5a1e0c3d-2b4f-4a6e-8c7d-9e0f1a2b3c4d"


def rss_kib() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def child(url: str, state: str, bare: bool) -> None:
    import random

    from powernode.cli.agent import lean_imports

    lean_imports()  # as `powernode-agent` does

    from powernode.agent.certstore import CertStore, Credentials
    from powernode.agent.config import AgentConfig
    from powernode.agent.lifecycle import ManualClock, StopSignal
    from powernode.agent.nodetasks import register_node_tasks
    from powernode.agent.runtime import HostFacts, Runtime
    from powernode.agent.spool import Spool
    from powernode.agent.tasks import InlineExecutor, default_registry
    from powernode.agent.transport import NodeClient, tls_context

    if bare:
        print(json.dumps(rss_kib()))
        return
    config = AgentConfig(platform_url=url, state_dir=Path(state))
    clock = ManualClock()
    stop = StopSignal()

    def factory(creds: Credentials) -> NodeClient:
        tls = tls_context(creds.platform_ca_file, creds.cert_file, creds.key_file)
        return NodeClient(url, tls=tls, clock=clock, stop=stop.event)

    registry = default_registry()
    # the task kinds `service` adds (agent.rotate, agent.exec): their imports count too
    register_node_tasks(
        registry,
        cfg=config,
        store=CertStore(config.pki_dir),
        creds=lambda: CertStore(config.pki_dir).load(),
        factory=factory,
        clock=clock,
    )
    runtime = Runtime(
        config,
        store=CertStore(config.pki_dir),
        spool=Spool(config.spool_file),
        client_factory=factory,
        executor=InlineExecutor(registry),
        clock=clock,
        stop=stop,
        facts=HostFacts(Path("/"), config.modules_dir),
        rng=random.Random(1),  # noqa: S311 - reproducible jitter
    )
    runtime.beat()
    first = rss_kib()
    runtime.run(max_beats=BEATS)
    after = rss_kib()
    print(json.dumps({"first": first, "after": after, "beats": runtime.beats}))


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.agent.fakeplatform import FakePlatform, TlsServer, pem

    from powernode.agent.certstore import CertStore
    from powernode.agent.enroll import enroll
    from powernode.agent.lifecycle import SystemClock
    from powernode.agent.transport import NodeClient, tls_context

    with tempfile.TemporaryDirectory() as tmp:
        platform = FakePlatform(SystemClock())
        server = TlsServer(platform, "127.0.0.1", tmp)
        try:
            state = Path(tmp) / "state"
            with NodeClient(server.url, tls=tls_context(server.ca_file)) as client:
                enroll(
                    CertStore(state / "pki"),
                    client,
                    platform.token(INSTANCE),
                    platform_ca_pem=pem(platform.ca_cert).encode(),
                    now=SystemClock().now(),
                )
            for n in range(BEATS + 1):
                platform.add_task(INSTANCE, "agent.echo", {"n": n})

            def run_child(bare: bool) -> dict[str, object]:
                argv = [sys.executable, __file__, "--child", server.url, str(state)]
                out = subprocess.run(
                    [*argv, *(["--bare"] if bare else [])],
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=True,
                )
                return dict(json.loads(out.stdout.strip().splitlines()[-1]))

            bare = run_child(bare=True)
            agent = run_child(bare=False)
        finally:
            server.close()
    done = sum(1 for t in platform.tasks.values() if t.state == "done")
    first = agent["first"]["VmRSS"] / 1024  # type: ignore[index]
    after = agent["after"]["VmRSS"] / 1024  # type: ignore[index]
    hwm = agent["after"]["VmHWM"] / 1024  # type: ignore[index]
    floor = bare["VmRSS"] / 1024  # type: ignore[operator]
    print(
        f"heartbeats answered: {len(platform.heartbeats)} (tasks done {done}, "
        f"events delivered {len(platform.events)})"
    )
    print(f"agent RSS after 1 beat:        {first:6.1f} MB")
    print(
        f"agent RSS after {BEATS} beats:    {after:6.1f} MB (peak {hwm:.1f} MB, "
        f"growth {after - first:+.1f} MB)"
    )
    print(
        f"reference (imports only):      {floor:6.1f} MB; ratio agent/reference {after / floor:.2f}"
    )
    print(f"target <= {TARGET_MB:.0f} MB: {'met' if after <= TARGET_MB else 'NOT met'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], "--bare" in sys.argv)
    else:
        main()
