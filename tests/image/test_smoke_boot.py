"""The first real boot: power-on to a heartbeat with ``drift: false``, watched from the platform.

kernel-initrd is built; ``system-base`` (examples/boot/system-base: Debian's python3,
busybox init, the agent's locked wheels and this tree's own wheel) is built by the module
toolchain and its artifact imported into the platform's ``qemu_boot_store``; its version is
recorded as the ingest worker records a verified one (no registry here: the node boots the
set from the 9p seed share and needs no pull), promoted live and assigned to the ``base``
template. The platform (uvicorn on 127.0.0.1, SQLite) runs ``provider = "qemu"``; an instance
is provisioned through the API, then only the API is read: the console
(``GET …/console``) for the boot phases, ``instance.enrolled``, the heartbeat,
``running_module_digests`` equal to the desired set, and ``drift: false``.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from powernode.platform.app import create_app
from powernode.platform.db.session import make_engine
from powernode.platform.pki_server import load_or_create_server_identity
from powernode.platform.services import catalog
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.qemu_provider import LocalQemuProvider, QemuConfig
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings
from powernode.platform.tlsserve import build_server
from powernode.toolchain.build import build_module
from tests.conftest import require_tool
from tests.package_cache import EPOCH, session_cache
from tests.platform.qemu.conftest import free_port, stop_all

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.slow,
    pytest.mark.tool,
    # Not yet in the default run: the boot has not reached a heartbeat within its budget
    # yet (importing the 8,255-object seed over 9p and enabling fs-verity on it under TCG
    # take minutes; see the report in docs/boot.md). `make smoke` sets POWERNODE_SMOKE=1.
    pytest.mark.skipif(
        os.environ.get("POWERNODE_SMOKE") != "1",
        reason="the first-boot smoke test runs under `make smoke` (POWERNODE_SMOKE=1) only",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_BASE = ROOT / "examples" / "boot" / "system-base"
ADMIN = Actor("smoke-setup", None, frozenset(SCOPES))
STEPS = ("staging", "blessed", "live")
# (phase, console marker), in boot order; the console is read through the API
PHASES = (
    ("kernel", "Linux version"),
    ("identity", "powernode: identity "),
    ("root composed", "powernode: root composed"),
    ("switch_root", "powernode: switch_root"),
    ("agent started", "powernode-agent boot:"),
)
GUEST_HOST = "10.0.2.2"
BOOT_BUDGET = 1200.0  # s: TCG on a loaded 2-core host; python's first imports are slow


@pytest.fixture(scope="module")
def system_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built system-base artifact directory (``POWERNODE_SMOKE_SYSTEM_BASE``: one built
    already by this fixture or ``powernode module build``, to iterate on the boot alone)."""
    given = os.environ.get("POWERNODE_SMOKE_SYSTEM_BASE")
    if given:
        return Path(given)
    require_tool("mmdebstrap")
    work = tmp_path_factory.mktemp("system-base")
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
        source_date_epoch=EPOCH,
        cache_dir=session_cache(tmp_path_factory),
        python_wheels=(wheel,),
    )
    return out


def import_artifact(artifact: Path, store: Path) -> str:
    """The artifact's image and objects into a ModuleStore layout; its composefs digest."""
    import json

    digest: str = json.loads((artifact / "module.json").read_text())["composefs_digest"]
    (store / "images").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact / "image.cfs", store / "images" / f"{digest[7:]}.cfs")
    shutil.copytree(artifact / "objects", store / "objects", dirs_exist_ok=True)
    return digest


class Api:
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


@pytest.fixture
def platform(
    tmp_path: Path, kernel_initrd: Path, system_base: Path
) -> Iterator[tuple[Api, str, Path]]:
    for tool in ("qemu-system-x86_64", "mkfs.ext4"):
        require_tool(tool)
    data = tmp_path / "data"
    state = data / "instances"
    store = data / "store"
    digest = import_artifact(system_base, store)
    port = free_port()
    # The node API is mutual TLS: the server certificate names the address the guest
    # dials (10.0.2.2, QEMU user networking) besides the test's 127.0.0.1.
    pki = data / "pki"
    cert, key, ca = load_or_create_server_identity(
        pki, ["127.0.0.1", "localhost", GUEST_HOST], now=datetime.now(UTC)
    )
    settings = Settings(
        data_dir=data,
        port=port,
        tls=True,
        tls_cert_file=cert,
        tls_key_file=key,
        guest_ca_file=ca,
        provider="qemu",
        image_dir=kernel_initrd,
        qemu_state_dir=state,
        qemu_boot_store=store,
    )
    provider = LocalQemuProvider(
        QemuConfig(
            image_dir=kernel_initrd,
            state_dir=state,
            platform_url=f"https://{GUEST_HOST}:{port}",
            ca_pem=ca.read_text(),
            accel="tcg",  # FACTS.md: /dev/kvm here hangs a stock kernel
            memory_mb=1024,
            persist_disk_mb=1024,
            boot_store=store,
            stop_timeout=5,
        )
    )
    app = create_app(settings, provider=provider)
    engine = make_engine(settings.effective_database_url)
    with Session(engine) as s:
        ctx = Ctx(s, ADMIN, datetime.now(UTC))
        token = create_token(ctx, "smoke", list(SCOPES))[1]
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
        _publish_live(api, engine, digest)
        yield api, digest, state
        api.client.close()
    finally:
        stop_all(state)
        srv.should_exit = True
        thread.join(10)
        engine.dispose()


def _publish_live(api: Api, engine: Any, digest: str) -> None:  # Any: sqlalchemy Engine
    """system-base 1.0.0 with the built digest, as ingest records it; live; assigned to base."""
    api.ok("POST", "/node_modules", json={"name": "system-base", "category_slug": "system-base",
                                           "variety": "subscription"})  # fmt: skip
    with Session(engine) as s:
        vid = catalog.record_ingested_version(
            Ctx(s, Actor("ingest-smoke", None, frozenset(SCOPES)), datetime.now(UTC)),
            "system-base",
            version_string="1.0.0",
            verified=catalog.VerifiedFields(
                composefs_digest=digest,
                artifact_ref="registry.invalid/powernode/modules/system-base:1.0.0",
            ),
            manifest={
                "name": "system-base",
                "mask": [],
                "protected_spec": [],
                "dependencies": {"requires": [], "provides": []},
            },
            file_list=["/etc/os-release"],
        ).id
        s.commit()
    for step in STEPS:
        api.ok("POST", f"/node_module_versions/{vid}/promote", json={"to": step})
    api.ok("POST", "/node_templates/base/assignments", json={"module_name": "system-base"})


@pytest.mark.timeout(3600)  # the system-base build (~15 min here) and a TCG boot
def test_a_node_boots_to_a_heartbeat_without_drift(platform: tuple[Api, str, Path]) -> None:
    api, digest, _state = platform
    api.ok("POST", "/nodes", json={"hostname": "smoke-1", "node_template_id": "base"})
    started = time.monotonic()
    iid = api.ok("POST", "/node_instances", json={"node_id": "smoke-1"})["instance"]["id"]
    seen: dict[str, float] = {}
    console = ""

    def mark(phase: str) -> None:
        if phase not in seen:
            seen[phase] = time.monotonic() - started
            print(f"smoke: {phase:<22} {seen[phase]:7.1f} s after provision", flush=True)

    deadline = started + BOOT_BUDGET
    inst: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = api("GET", f"/node_instances/{iid}/console", params={"tail_bytes": 1 << 20})
        console = r.text if r.status_code == 200 else console
        for phase, marker in PHASES:
            if marker in console:
                mark(phase)
        if "powernode: boot stopped" in console or "refused to start" in console:
            break
        events = api.ok(
            "GET", f"/node_instances/{iid}/events", params={"kind": "instance.enrolled"}
        )
        if events["events"]:
            mark("instance.enrolled")
        inst = api.ok("GET", f"/node_instances/{iid}")["instance"]
        if inst["last_heartbeat_at"]:
            mark("heartbeat")
        if inst["running_module_digests"] == {"system-base": digest}:
            mark("running = desired")
            drift = api.ok("GET", f"/node_instances/{iid}/drift")
            if drift["drift"] is False:
                mark("drift false")
                break
        time.sleep(2)
    print("smoke: console (last 6 KiB):\n" + console[-6144:], flush=True)
    assert "drift false" in seen, (
        f"phases seen {seen}; instance {inst}; console tail:\n{console[-4000:]}"
    )
    assert "instance.enrolled" in seen and "heartbeat" in seen
