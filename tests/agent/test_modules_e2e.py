"""End to end, the module journey: a real registry, the agent process in its own network
namespace over mTLS, real mounts.

assign (base + app + a config module for app) → reconcile → the union holds the expected
files with the expected winners (a protected path owned by its owner though a higher module
ships it too; the config module's override winning) → upgrade app → roll back (the platform
demotes the new version: the desired set names the old digest again) → detach app.

The platform side is the in-memory fake of docs/node-api.md served over real TLS
(tests/agent/fakeplatform.py), its desired set composed with the core library as the
platform composes it (core.compose), until the real node API serves GET /node_api/modules.
The registry listens on 127.0.0.1; a relay on the veth's host end carries the namespace's
traffic to it. The agent's mounts live in its own mount namespace (``ip netns exec`` makes
one): files are read through the union with ``nsenter`` into it, and vanish with it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from powernode.agent.lifecycle import SystemClock
from powernode.core.compose import ModuleLayer, compose
from powernode.core.priority import Variety
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import generate_private_key, public_key_pem
from tests.agent.agentproc import AgentProcess, Netns, agent_cmd, wait_for, write_config
from tests.agent.fakeplatform import FakePlatform, TlsServer
from tests.agent.test_modules_support import big
from tests.conftest import require_root, require_tool
from tests.oci.registry_fixture import run_registry
from tests.platform.conftest import pg_server, pg_template
from tests.publish.artifacts import make_artifact

__all__ = ["pg_server", "pg_template"]  # session fixtures for the real-platform test

pytestmark = [pytest.mark.registry, pytest.mark.netns, pytest.mark.mount, pytest.mark.slow]
INSTANCE = "5a0e1c2a-9b8d-4e6f-a1b2-c3d4e5f60719"

# name -> (priority, variety, parent, files, protected)
MODULES: dict[str, tuple[int, Variety, str | None, dict[str, bytes], tuple[str, ...]]] = {
    "base": (10, Variety.SUBSCRIPTION, None,
             {"etc/base.conf": big("base owns this"), "etc/motd": big("motd")},
             ("/etc/base.conf",)),
    "app-1": (50, Variety.SUBSCRIPTION, None,
              {"etc/base.conf": big("app would clobber"), "etc/app.conf": big("app default"),
               "opt/app/version": big("app 1")}, ()),
    "app-2": (50, Variety.SUBSCRIPTION, None,
              {"etc/base.conf": big("app would clobber"), "etc/app.conf": big("app default"),
               "opt/app/version": big("app 2")}, ()),
    "app-config": (90, Variety.CONFIG, "app", {"etc/app.conf": big("site override")}, ()),
}  # fmt: skip


class Relay:
    """TCP from ``host:port`` to 127.0.0.1:``target``, one thread pair per connection."""

    def __init__(self, host: str, target: int) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.target = target
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=30)
            done = threading.Barrier(2, action=lambda c=conn, u=upstream: (c.close(), u.close()))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b, done), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait(60)  # the second direction to finish closes both sockets

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


@pytest.fixture
def netns() -> Iterator[Netns]:
    require_root()
    require_tool("ip")
    require_tool("nsenter")
    ns = Netns()
    try:
        yield ns
    finally:
        ns.remove()


def name_version(key: str) -> tuple[str, str]:
    """``app-2`` is module ``app`` version 2.0.0; any other key is a 1.0.0 module."""
    name, _, major = key.rpartition("-")
    return (name, f"{major}.0.0") if major.isdigit() else (key, "1.0.0")


def layer(key: str) -> ModuleLayer:
    priority, variety, parent, files, protected = MODULES[key]
    paths = set()
    for rel in files:
        parts = rel.split("/")
        paths |= {"/" + "/".join(parts[:i]) + "/" for i in range(1, len(parts))}
        paths.add("/" + rel)
    name, _ = name_version(key)
    return ModuleLayer(name, priority, variety, parent, tuple(sorted(paths)), (), protected)


class Catalog:
    """The modules pushed and signed, and the desired sets the platform would send."""

    def __init__(self, url: str, host: str, tmp: Path) -> None:
        self.key = generate_private_key()
        self.pub = public_key_pem(self.key).decode()
        self.entries: dict[str, dict[str, Any]] = {}
        with DistributionRegistry(url) as reg:
            for key, (priority, _, _, files, _) in MODULES.items():
                name, version = name_version(key)
                art = make_artifact(tmp / f"art-{key}", files, name=name, version=version)
                ref = parse_reference(f"{host}/e2e/{name}:{version}")
                push_artifact(reg, ref, art)
                sign_artifact(reg, ref, self.key)
                manifest = reg.get_manifest(ref).digest
                doc = json.loads((art / "module.json").read_text())
                self.entries[key] = {
                    "name": name,
                    "version": version,
                    "composefs_digest": doc["composefs_digest"],
                    "effective_priority": priority,
                    "reference": f"{host}/e2e/{name}@{manifest}",  # pinned, as the platform pins
                    "trust_policy": {"cosign_public_key": self.pub},
                }

    def desired(self, *keys: str) -> dict[str, Any]:
        composition = compose([layer(k) for k in keys])
        return {
            "instance_id": INSTANCE,
            "modules": [self.entries[k] for k in keys],
            "composition": composition.to_dict(),
        }

    def digests(self, *keys: str) -> dict[str, str]:
        return {self.entries[k]["name"]: self.entries[k]["composefs_digest"] for k in keys}


def test_assign_reconcile_upgrade_rollback_detach(netns: Netns, tmp_path: Path) -> None:
    platform = FakePlatform(SystemClock())
    server = TlsServer(platform, netns.host_ip, tmp_path)
    agent: AgentProcess | None = None
    root = tmp_path / "root"
    with run_registry(tmp_path / "registry") as registry:
        port = int(registry.url.rsplit(":", 1)[1])
        relay = Relay(netns.host_ip, port)
        host = f"{netns.host_ip}:{relay.port}"
        try:
            catalog = Catalog(f"http://{host}", host, tmp_path)
            token = tmp_path / "token"
            token.write_text(platform.token(INSTANCE) + "\n")
            config = write_config(
                tmp_path / "agent.toml",
                platform_url=server.url,
                state_dir=tmp_path / "state",
                heartbeat_seconds=0.2,
                host_root=tmp_path,
                modules_root=root,
                modules_sync_seconds=0.3,
                modules_registry=f"http://{host}",
            )
            enroll = ["enroll", "--config", str(config), "--token-file", str(token)]
            agent_cmd([*enroll, "--platform-ca", str(server.ca_file), "--no-discover"],
                      netns.prefix())  # fmt: skip
            agent = AgentProcess(config, tmp_path / "agent.log", netns.prefix())
            pid = agent.proc.pid

            def read(rel: str) -> bytes | None:
                out = subprocess.run(
                    ["nsenter", "-t", str(pid), "-m", "cat", str(root / rel)],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
                return out.stdout if out.returncode == 0 else None

            def converge(*keys: str) -> None:
                platform.desired_modules[INSTANCE] = catalog.desired(*keys)
                want = catalog.digests(*keys)
                wait_for(
                    f"the heartbeat to report {sorted(want)}",
                    lambda: (
                        bool(platform.heartbeats)
                        and platform.heartbeats[-1][1]["running_module_digests"] == want
                    ),
                    60,
                )

            # assign → reconcile: the expected files with the expected winners
            converge("base", "app-1", "app-config")
            assert read("etc/base.conf") == big("base owns this")  # protected: owner wins
            assert read("etc/app.conf") == big("site override")  # the config module's override
            assert read("etc/motd") == big("motd")
            assert read("opt/app/version") == big("app 1")
            # upgrade
            converge("base", "app-2", "app-config")
            assert read("opt/app/version") == big("app 2")
            assert read("etc/base.conf") == big("base owns this")
            # rollback: 2.0.0 demoted, the desired set names 1.0.0 again (already in the store)
            converge("base", "app-1", "app-config")
            assert read("opt/app/version") == big("app 1")
            # detach
            converge("base", "app-config")
            assert read("opt/app/version") is None
            assert read("etc/base.conf") == big("base owns this")
            assert read("etc/app.conf") == big("site override")

            assert agent.terminate() == 0, agent.output()
            agent = None
            assert server.peers == {netns.node_ip}  # the platform was reached from inside
            kinds = [e["kind"] for e in platform.events.values()]
            assert "module.refused" not in kinds, agent_log(tmp_path)
            assert kinds.count("module.synced") == 4
            assert not root.exists() or not any(root.iterdir()), "mounts leaked to the host"
        finally:
            if agent is not None:
                agent.close()
            relay.close()
            server.close()


def agent_log(tmp_path: Path) -> str:
    return (tmp_path / "agent.log").read_text(errors="replace")[-4000:]


# -- against the real platform: PostgreSQL, the node API over mTLS (tlsserve) ------------------

API = "/api/v1/system"


class Operator:
    """The platform's operator API over HTTPS, as an admin."""

    def __init__(self, url: str, ca: Path, token: str, db_url: str) -> None:
        import httpx

        from powernode.agent.transport import tls_context

        self.http = httpx.Client(
            base_url=url + API,
            verify=tls_context(ca),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        self.db_url = db_url

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def publish(self, catalog: Catalog, key: str, category: str, **module: Any) -> str:
        """Create the module if new, register the version pushed for ``key``, promote to live."""
        entry = catalog.entries[key]
        name = entry["name"]
        if self.http.get(f"/node_modules/{name}").status_code == 404:
            body = {"name": name, "category_slug": category, "cosign_public_key": catalog.pub}
            self.call("POST", "/node_modules", json={**body, **module})
        protected = MODULES[key][4]
        manifest = {"name": name, "mask": [], "protected_spec": list(protected),
                    "dependencies": {"requires": [], "provides": []}}  # fmt: skip
        # The operator API cannot set digests, references or cosign_verified
        # (issue 13 item 2): record the version as the ingest worker does.
        from datetime import UTC, datetime

        from sqlalchemy.orm import Session

        from powernode.platform.db.session import make_engine
        from powernode.platform.services import catalog as platform_catalog
        from powernode.platform.services.context import SCOPES, Actor, Ctx

        engine = make_engine(self.db_url)
        with Session(engine) as session:
            ctx = Ctx(session, Actor("ingest", None, frozenset(SCOPES)), datetime.now(UTC))
            vid = platform_catalog.record_ingested_version(
                ctx,
                name,
                version_string=entry["version"],
                verified=platform_catalog.VerifiedFields(
                    composefs_digest=entry["composefs_digest"], artifact_ref=entry["reference"]
                ),
                manifest=manifest,
                file_list=list(layer(key).files),
            ).id
            session.commit()
        engine.dispose()
        version = {"id": vid}
        for step in ("staging", "blessed", "live"):
            self.promote(version["id"], step)
        return str(version["id"])

    def promote(self, version_id: str, to: str) -> None:
        self.call("POST", f"/node_module_versions/{version_id}/promote", json={"to": to})


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    import os

    from tests.platform import pgcluster

    server: str = request.getfixturevalue("pg_server")
    template: str = request.getfixturevalue("pg_template")
    return pgcluster.create_database(server, f"pn_e2e_{os.getpid()}_{uuid4().hex[:6]}", template)


@pytest.mark.postgres
def test_real_platform_assign_reconcile_upgrade_rollback_detach(
    netns: Netns, tmp_path: Path, pg_url: str
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from powernode.platform.app import create_app
    from powernode.platform.db.session import make_engine
    from powernode.platform.services.context import SCOPES, Actor, Ctx
    from powernode.platform.services.tokens import create_token
    from powernode.platform.settings import Settings
    from tests.platform.nodeapi_tls.tlsserver import running

    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url,
                        migrate_on_start=False, tls=True, host=netns.host_ip)  # fmt: skip
    engine = make_engine(pg_url)
    with Session(engine) as session:
        ctx = Ctx(session, Actor("e2e", None, frozenset(SCOPES)), datetime.now(UTC))
        admin = create_token(ctx, "admin", ["write", "promote-live", "read"])[1]
        session.commit()
    engine.dispose()
    app = create_app(settings)
    agent: AgentProcess | None = None
    root = tmp_path / "root"
    with (
        run_registry(tmp_path / "registry") as registry,
        running(app, settings, netns.host_ip) as url,
    ):
        relay = Relay(netns.host_ip, int(registry.url.rsplit(":", 1)[1]))
        host = f"{netns.host_ip}:{relay.port}"
        ca = settings.pki_dir / "platform-ca.pem"
        op = Operator(url, ca, admin, pg_url)
        try:
            catalog = Catalog(f"http://{host}", host, tmp_path)
            op.publish(catalog, "base", "system-base")
            op.publish(catalog, "app-1", "userland")
            op.publish(catalog, "app-config", "userland", variety="config", parent_module="app")
            for name in ("base", "app", "app-config"):
                op.call("POST", "/node_templates/base/assignments", json={"module_name": name})
            op.call("POST", "/nodes", json={"hostname": "e2e-1", "node_template_id": "base"})
            iid = op.call("POST", "/node_instances", json={"node_id": "e2e-1"})["instance"]["id"]
            token = op.call("POST", f"/node_instances/{iid}/bootstrap_tokens", json={})["token"]
            (tmp_path / "token").write_text(token + "\n")
            config = write_config(
                tmp_path / "agent.toml",
                platform_url=url,
                state_dir=tmp_path / "state",
                heartbeat_seconds=0.2,
                host_root=tmp_path,
                modules_root=root,
                modules_sync_seconds=0.3,
                modules_registry=f"http://{host}",
            )
            enroll = ["enroll", "--config", str(config), "--token-file", str(tmp_path / "token")]
            agent_cmd([*enroll, "--platform-ca", str(ca), "--no-discover"], netns.prefix())
            agent = AgentProcess(config, tmp_path / "agent.log", netns.prefix())
            pid = agent.proc.pid

            def read(rel: str) -> bytes | None:
                out = subprocess.run(["nsenter", "-t", str(pid), "-m", "cat", str(root / rel)],
                                     capture_output=True, timeout=10, check=False)  # fmt: skip
                return out.stdout if out.returncode == 0 else None

            def converge(*keys: str) -> None:
                want = catalog.digests(*keys)

                def settled() -> bool:
                    report = op.call("GET", f"/node_instances/{iid}/drift")
                    running_now = {m["name"]: m["running_digest"] for m in report["modules"]}
                    return report["drift"] is False and running_now == want

                wait_for(f"drift false with {sorted(want)}", settled, 60)

            converge("base", "app-1", "app-config")
            assert read("etc/base.conf") == big("base owns this")
            assert read("etc/app.conf") == big("site override")
            assert read("opt/app/version") == big("app 1")
            new = op.publish(catalog, "app-2", "userland")  # upgrade: 2.0.0 goes live
            converge("base", "app-2", "app-config")
            assert read("opt/app/version") == big("app 2")
            op.promote(new, "retired")  # rollback: the new version is demoted
            converge("base", "app-1", "app-config")
            assert read("opt/app/version") == big("app 1")
            op.call("DELETE", "/node_templates/base/assignments/app")  # detach
            # app-config's parent is gone: unassign it too, as an operator would
            op.call("DELETE", "/node_templates/base/assignments/app-config")
            converge("base")
            assert read("opt/app/version") is None
            assert read("etc/base.conf") == big("base owns this")
            assert agent.terminate() == 0, agent.output()
            agent = None
            events = op.call("GET", f"/node_instances/{iid}/events")
            kinds = [e["kind"] for e in events.get("events", events)]
            assert "module.refused" not in kinds, agent_log(tmp_path)
            assert kinds.count("module.synced") >= 4
        finally:
            if agent is not None:
                agent.close()
            op.http.close()
            relay.close()
