"""The first-boot harness shared by tests/image/test_smoke_boot.py and bench/bench_node_boot.py.

A platform (uvicorn over mutual TLS, PostgreSQL or SQLite) running ``provider = "qemu"``
with the kernel-initrd image, its ingest worker and a real OCI registry (Debian's
``docker-registry`` on 127.0.0.1; a guest dials it as 10.0.2.2, which the seed bundle
tells the agent). ``system-base`` (examples/boot/system-base: Debian's python3, busybox
init and the agent's wheels) and ``hello`` (examples/boot/hello, a userland module) are
built by the module toolchain, pushed and signed with a cosign key; the platform ingests
each version from the registry under the module's trust policy (the key), records it
``built``; it is promoted to ``live`` and assigned to the ``base`` template. The
provider's boot store is filled the way an operator does it, by verifying and pulling
from the registry. Everything after setup is read through the operator API only: the
console (``GET …/console``), events, the instance record, drift.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from powernode.demo.publishing import SigningKey, make_signing_key
from powernode.node.store import ModuleStore
from powernode.oci.refs import parse_reference
from powernode.oci.registry import open_registry
from powernode.platform.app import create_app
from powernode.platform.db.session import make_engine
from powernode.platform.pki_server import load_or_create_server_identity
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.providers import provider_of
from powernode.platform.services.qemu_provider import LocalQemuProvider
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings
from powernode.platform.tlsserve import build_server
from powernode.platform.worker import attach, worker_from_settings
from powernode.publish import push_artifact, sign_artifact
from powernode.publish.pull import pull_artifact
from powernode.publish.verify import verify_artifact
from powernode.signing.policy import PublicKeyPolicy
from powernode.toolchain.build import build_module
from tests.oci.registry_fixture import run_registry

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_BASE = ROOT / "examples" / "boot" / "system-base"
HELLO = ROOT / "examples" / "boot" / "hello"
ADMIN = Actor("smoke-setup", None, frozenset(SCOPES))
STEPS = ("staging", "blessed", "live")
GUEST_HOST = "10.0.2.2"  # QEMU user networking: the host's 127.0.0.1
INGEST_BUDGET = 300.0  # s: the worker polls every second; system-base's objects are ~175 MB
# (phase, console marker), in boot order; the console is read through the API
CONSOLE_PHASES = (
    ("initramfs /init", "powernode: initramfs /init"),  # the kernel is booted quiet
    ("identity claimed", "powernode: identity "),
    ("root composed", "powernode: root composed"),
    ("switch_root", "powernode: switch_root"),
    ("agent started", "powernode-agent boot:"),
)
STOPPED = ("powernode: boot stopped", "refused to start")


def build_system_base(work: Path, cache: Path, epoch: int) -> Path:
    """system-base built by the module toolchain with this tree's own wheel; the artifact."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "wheel"), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    [wheel] = sorted((work / "wheel").glob("powernode-*.whl"))
    out = work / "artifact"
    build_module(
        SYSTEM_BASE,
        out,
        version="1.0.0",
        source_date_epoch=epoch,
        cache_dir=cache,
        python_wheels=(wheel,),
    )
    return out


def build_hello(work: Path, version: str, epoch: int) -> Path:
    """examples/boot/hello at ``version``; its greeting names the version, so every version
    is another tree (another composefs digest)."""
    src = work / f"hello-src-{version}"
    shutil.copytree(HELLO, src)
    (src / "rootfs/etc/hello/greeting").write_text(f"hello from powernode, version {version}\n")
    out = work / f"hello-{version}"
    build_module(src, out, version=version, source_date_epoch=epoch, packages=False)
    return out


class Api:
    """The operator API over HTTPS with a bearer token."""

    def __init__(self, url: str, token: str, ca: Path) -> None:
        self.client = httpx.Client(
            base_url=url + "/api/v1/system",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            verify=ssl.create_default_context(cafile=str(ca)),
        )

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:  # Any: httpx kwargs
        return self.client.request(method, path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:  # Any: httpx kwargs; JSON body
        r = self(method, path, **kw)
        assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def console(self, iid: str) -> str:
        r = self("GET", f"/node_instances/{iid}/console", params={"tail_bytes": 1 << 20})
        return r.text if r.status_code == 200 else ""

    def events(self, iid: str, kind: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.ok(
            "GET", f"/node_instances/{iid}/events", params={"kind": kind}
        )["events"]
        return found


@dataclass
class Smoke:
    api: Api
    provider: LocalQemuProvider
    engine: Engine
    registry_url: str  # as this host dials it
    key: SigningKey
    store: Path  # the provider's boot store
    desired: dict[str, str] = field(default_factory=dict)  # module -> live composefs digest

    @property
    def digest(self) -> str:
        """system-base's composefs digest."""
        return self.desired["system-base"]

    def publish(self, artifact: Path, *, to_boot_store: bool = False) -> str:
        """Push and sign ``artifact`` (the toolchain's build), wait until the platform's
        ingest worker verified and recorded it, promote it to live; its version id.
        ``to_boot_store``: also verify and pull it into the provider's boot store."""
        meta = json.loads((artifact / "module.json").read_text())
        name, version, digest = meta["name"], meta["version"], meta["composefs_digest"]
        repository, tag = f"default/modules/{name}", f"v{version}"
        ref = parse_reference(f"{repository}:{tag}")
        registry = open_registry(self.registry_url)
        try:
            push_artifact(registry, ref, artifact)
            sign_artifact(registry, ref, self.key.key)
            if to_boot_store:  # `powernode module verify --key` then `module pull`
                verified = verify_artifact(
                    registry, ref, PublicKeyPolicy(self.key.public_pem.encode())
                )
                pulled = pull_artifact(registry, verified.reference, ModuleStore(self.store))
                assert str(pulled.composefs_digest) == digest
        finally:
            registry.close()
        vid = self._wait_built(name, tag)
        for step in STEPS:
            self.api.ok("POST", f"/node_module_versions/{vid}/promote", json={"to": step})
        self.desired[name] = digest
        return vid

    def _wait_built(self, name: str, tag: str) -> str:
        deadline = time.monotonic() + INGEST_BUDGET
        row: dict[str, Any] = {}
        while time.monotonic() < deadline:
            rows = self.api.ok("GET", f"/node_modules/{name}/ingests")["ingests"]
            row = next((r for r in rows if r["tag"] == tag), {})
            assert row.get("state") != "rejected", f"ingest rejected {name}:{tag}: {row}"
            if row.get("state") == "built" and row.get("version_id"):
                return str(row["version_id"])
            time.sleep(1)
        raise AssertionError(f"{name}:{tag} not ingested within {INGEST_BUDGET:.0f} s: {row}")

    def register(self, name: str, category: str) -> None:
        """The module, trusting the smoke's cosign key, assigned to the base template."""
        self.api.ok("POST", "/node_modules", json={
            "name": name, "category_slug": category, "variety": "subscription",
            "cosign_public_key": self.key.public_pem,
        })  # fmt: skip
        self.api.ok("POST", "/node_templates/base/assignments", json={"module_name": name})


@contextmanager
def smoke_platform(
    work: Path,
    kernel_initrd: Path,
    system_base: Path,
    database_url: str = "",
    *,
    userland: Path | None = None,
) -> Iterator[Smoke]:
    """The platform with the qemu provider and a registry, system-base (and ``userland``,
    hello's first version) published, ingested, live on ``base`` and in the boot store."""
    from tests.platform.qemu.conftest import free_port, stop_all

    data = work / "data"
    state = data / "instances"
    store = data / "store"
    port = free_port()
    # The node API is mutual TLS: the server certificate names the address the guest
    # dials (10.0.2.2, QEMU user networking) besides the test's 127.0.0.1.
    cert, key, ca = load_or_create_server_identity(
        data / "pki", ["127.0.0.1", "localhost", GUEST_HOST], now=datetime.now(UTC)
    )
    with run_registry(work / "registry") as registry:
        settings = Settings(
            data_dir=data,
            database_url=database_url,
            port=port,
            tls=True,
            tls_cert_file=cert,
            tls_key_file=key,
            guest_ca_file=ca,
            provider="qemu",
            image_dir=kernel_initrd,
            qemu_state_dir=state,
            qemu_boot_store=store,
            registry=registry.url,
            ingest_poll_seconds=1.0,
            qemu_accel="tcg",  # FACTS.md: /dev/kvm here hangs a stock kernel
            qemu_memory_mb=1024,
            qemu_persist_disk_mb=1024,
        )
        # the provider as `platform serve` makes it from these settings (provider_of)
        provider = provider_of(settings)
        assert isinstance(provider, LocalQemuProvider)
        app = create_app(settings, provider=provider)
        attach(app, worker_from_settings(settings, app.state.platform.sessions))
        engine = make_engine(settings.effective_database_url)
        with Session(engine) as s:
            token = create_token(Ctx(s, ADMIN, datetime.now(UTC)), "smoke", list(SCOPES))[1]
            s.commit()
        srv = build_server(app, settings, access_log=False, log_level="warning")
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not srv.started:
                assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
                time.sleep(0.05)
            api = Api(f"https://127.0.0.1:{port}", token, ca)
            smoke = Smoke(
                api, provider, engine, registry.url, make_signing_key(_dir(work / "keys")), store
            )
            smoke.register("system-base", "system-base")
            smoke.publish(system_base, to_boot_store=True)
            if userland is not None:
                smoke.register("hello", "userland")
                smoke.publish(userland, to_boot_store=True)
            yield smoke
            api.client.close()
        finally:
            stop_all(state)
            srv.should_exit = True
            thread.join(10)
            engine.dispose()


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Watch:
    """Phases seen (seconds after ``started``), printed as they come."""

    started: float
    label: str = "smoke"
    seen: dict[str, float] = field(default_factory=dict)
    console: str = ""

    def mark(self, phase: str) -> None:
        if phase not in self.seen:
            self.seen[phase] = time.monotonic() - self.started
            print(f"{self.label}: {phase:<24} {self.seen[phase]:7.1f} s", flush=True)


def heartbeat_after(inst: dict[str, Any], since: datetime) -> bool:
    at = inst.get("last_heartbeat_at")
    return bool(at) and datetime.fromisoformat(at).astimezone(UTC) > since


def watch_boot(
    smoke: Smoke,
    iid: str,
    watch: Watch,
    *,
    budget: float,
    console_from: int = 0,
    heartbeat_since: datetime | None = None,
    done: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Poll the API until drift is false (or ``done``), marking phases; the last instance.

    ``console_from``: console offset where this boot starts (a reboot appends to it);
    ``heartbeat_since``: a heartbeat counts only after this time (the boot before it beat)."""
    api = smoke.api
    deadline = watch.started + budget
    inst: dict[str, Any] = {}
    since = heartbeat_since or datetime.min.replace(tzinfo=UTC)
    while time.monotonic() < deadline:
        full = api.console(iid) or watch.console
        watch.console = full
        this_boot = full[console_from:]
        for phase, marker in CONSOLE_PHASES:
            if marker in this_boot:
                watch.mark(phase)
        if any(s in this_boot for s in STOPPED):
            break
        if api.events(iid, "instance.enrolled"):
            watch.mark("instance.enrolled")
        inst = api.ok("GET", f"/node_instances/{iid}")["instance"]
        if heartbeat_after(inst, since):
            watch.mark("first heartbeat")
            if inst["running_module_digests"] == smoke.desired:
                watch.mark("running = desired")
                drift = api.ok("GET", f"/node_instances/{iid}/drift")
                if drift["drift"] is False:
                    watch.mark("drift false")
                    if done is None or done(inst):
                        break
        time.sleep(1)
    return inst
