"""A real platform (uvicorn on 127.0.0.1, SQLite) whose provider boots QEMU VMs.

The guest reaches it at 10.0.2.2 (QEMU user networking). Every VM a test
starts is stopped in the fixtures' finalizers, failed test or not.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from powernode.platform.app import create_app
from powernode.platform.db.session import make_engine
from powernode.platform.services import nodes
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.qemu_provider import LocalQemuProvider, QemuConfig
from powernode.platform.services.qemu_vm import names_instance
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings
from tests.platform.qemu import guest

ADMIN = Actor("test-setup", None, frozenset(SCOPES))
TOOLS = ("qemu-system-x86_64", "mkfs.ext4", "cpio", "zstd", "dpkg-deb")


def _need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [] if Path("/bin/busybox").exists() else ["busybox (busybox-static)"]
    if missing:
        why = f"missing {', '.join(missing)}: scripts/install-system-deps.sh test"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session")
def pvh_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernel (vmlinux, PVH), initrd, cmdline: what the provider boots."""
    _need_tools()
    return guest.image_dir(tmp_path_factory.mktemp("image-pvh"), pvh=True)


@pytest.fixture(scope="session")
def netboot_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernel (vmlinuz: iPXE boots bzImage), initrd, cmdline: what netboot serves."""
    _need_tools()
    return guest.image_dir(tmp_path_factory.mktemp("image-bz"), pvh=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qemu_config(image: Path, state: Path, port: int) -> QemuConfig:
    return QemuConfig(
        image_dir=image,
        state_dir=state,
        platform_url=f"http://10.0.2.2:{port}",
        accel="tcg",  # FACTS.md: /dev/kvm here hangs a stock kernel
        memory_mb=256,
        persist_disk_mb=64,
        stop_timeout=5,
    )


def stop_all(state: Path) -> None:
    """Terminate every VM a test left in ``state`` (finalizers)."""
    if not state.is_dir():
        return
    provider = LocalQemuProvider(qemu_config(state, state, 1))
    for d in state.iterdir():
        if d.is_dir():
            provider.terminate(d.name)


@dataclass
class QemuPlatform:
    url: str
    port: int
    engine: Engine
    provider: LocalQemuProvider
    token: str
    data: Path
    state: Path

    def api(self, method: str, path: str, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url + "/api/v1/system", timeout=60) as c:
            return c.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]

    def node(self, hostname: str) -> str:
        with Session(self.engine) as s:
            node = nodes.create_node(Ctx(s, ADMIN, datetime.now(UTC)), hostname, "base")
            s.commit()
            return node.id

    def wait_console(self, iid: str, marker: str, timeout: float = 120) -> str:
        """The console once it shows ``marker``; fails after ``timeout`` s with the console."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.provider.console(iid, 1 << 20).decode(errors="replace")
            if marker in text:
                return text
            time.sleep(0.25)
        pytest.fail(f"no {marker!r} on {iid}'s console within {timeout} s; it shows:\n{text}")


@pytest.fixture(scope="module")
def qemu_platform(
    tmp_path_factory: pytest.TempPathFactory, pvh_image: Path, netboot_image: Path
) -> Iterator[QemuPlatform]:
    data = tmp_path_factory.mktemp("qemu-platform")
    state = data / "instances"
    port = free_port()
    settings = Settings(
        data_dir=data,
        port=port,
        provider="qemu",
        image_dir=netboot_image,
        qemu_state_dir=state,
    )
    provider = LocalQemuProvider(qemu_config(pvh_image, state, port))
    app = create_app(settings, provider=provider)
    engine = make_engine(settings.effective_database_url)
    with Session(engine) as s:
        token = create_token(Ctx(s, ADMIN, datetime.now(UTC)), "qemu-tests", list(SCOPES))[1]
        s.commit()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not srv.started:
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.02)
        yield QemuPlatform(f"http://127.0.0.1:{port}", port, engine, provider, token, data, state)
    finally:
        stop_all(state)
        srv.should_exit = True
        thread.join(10)
        engine.dispose()


@pytest.fixture
def vm_reaper(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Registers state directories whose VMs are stopped after the test, whatever happened."""
    dirs: list[Path] = []
    yield dirs.append
    for d in dirs:
        stop_all(d)


def vms_of(instance_id: str) -> list[int]:
    """Every live process whose command line names the instance's QEMU."""
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and names_instance(int(p.name), instance_id)
    ]
