"""LocalQemuProvider booting real VMs under TCG, through the platform's API.

Proves: provision boots the kernel-initrd with the instance UUID and a seed
bundle (platform URL, CA, a single-use bootstrap token minted by the token
service) over fw-cfg, the guest reaches the platform at 10.0.2.2, the
persist disk is attached; terminate stops the VM, removes the disk and
keeps the console, readable over the API and the CLI; a new provider finds
a running VM again, and one killed behind its back is marked lost; two
concurrent provisions of one instance start one VM.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from powernode.cli.system import app as system_app
from powernode.platform.app import create_app
from powernode.platform.db import BootstrapToken, FleetEvent, NodeInstance
from powernode.platform.problems import ConflictError, ProviderError
from powernode.platform.services import nodes, qemu_accel
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.providers import ProvisionRequest
from powernode.platform.services.qemu_provider import LocalQemuProvider
from powernode.platform.services.qemu_vm import wait_gone
from powernode.platform.services.tokens import hash_secret
from powernode.platform.settings import Settings
from tests.conftest import require_tool
from tests.platform.qemu.conftest import QemuPlatform, qemu_config, vms_of

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def _seed(console: str) -> dict[str, str]:
    body = console.split("powernode-test: seed-begin", 1)[1].split(
        "powernode-test: seed-end", maxsplit=1
    )[0]
    seed: dict[str, str] = json.loads(body)
    return seed


def _provision(p: QemuPlatform, hostname: str) -> str:
    p.node(hostname)
    r = p.api("POST", "/node_instances", json={"node_id": hostname})
    assert r.status_code == 201, r.text
    iid: str = r.json()["instance"]["id"]
    assert r.json()["instance"]["provider"] == "qemu"
    return iid


def test_provision_boots_with_seed_and_terminate_keeps_console(qemu_platform: QemuPlatform) -> None:
    p = qemu_platform
    iid = _provision(p, "vm-boot")
    console = p.wait_console(iid, "powernode-test: ready")
    assert f"powernode-test: instance_uuid={iid}" in console
    assert f"powernode.id={iid}" in console
    seed = _seed(console)
    assert seed["format"] == "powernode-seed/1"
    assert seed["instance_id"] == iid
    assert seed["platform_url"] == f"http://10.0.2.2:{p.port}"
    assert "powernode-test: seed files: bootstrap-token seed.json \r\n" in console
    (token_line,) = [x for x in console.splitlines() if "bootstrap-token=" in x]
    secret = token_line.split("=", 1)[1].strip()
    assert secret.startswith("pnb_")
    assert 'powernode-test: platform says {"status":"ok"}' in console
    assert "powernode-test: persist disk /dev/vda" in console
    # The token is the token service's, for this instance, not used yet.
    with Session(p.engine) as s:
        tokens = s.scalars(select(BootstrapToken).where(BootstrapToken.instance_id == iid)).all()
        assert [(t.token_hash, t.used_at) for t in tokens] == [(hash_secret(secret), None)]
    # Readable through the API (operator read scope) and the CLI, a bounded tail.
    r = p.api("GET", f"/node_instances/{iid}/console", params={"tail_bytes": 200})
    assert r.status_code == 200
    assert "powernode-test: ready" in r.text
    assert len(r.content) <= 200
    assert (
        p.api("GET", f"/node_instances/{iid}/console", params={"tail_bytes": 0}).status_code == 422
    )

    (_pid,) = vms_of(iid)
    disk = p.state / iid / "persist.raw"
    assert disk.exists()
    r = p.api("POST", f"/node_instances/{iid}/terminate")
    assert r.status_code == 200, r.text
    assert vms_of(iid) == []
    assert not disk.exists()
    assert not (p.state / iid / "seed.tar").exists()
    r = p.api("GET", f"/node_instances/{iid}/console")
    assert r.status_code == 200
    assert f"instance_uuid={iid}" in r.text
    out = CliRunner().invoke(
        system_app, ["--url", p.url, "--token", p.token, "instance-console", iid]
    )
    assert out.exit_code == 0, out.output
    assert "powernode-test: ready" in out.stdout


def test_restart_finds_the_vm_and_marks_a_killed_one_lost(qemu_platform: QemuPlatform) -> None:
    p = qemu_platform
    iid = _provision(p, "vm-restart")
    p.wait_console(iid, "powernode-test: boot")
    (pid,) = vms_of(iid)
    # The platform went away and came back: a new provider object on the same state.
    again = LocalQemuProvider(qemu_config(p.provider.config.image_dir, p.state, p.port))
    assert again.is_running(iid) is True
    assert again.pid(iid) == pid
    system = Actor("platform", None, frozenset())
    with Session(p.engine) as s:
        assert nodes.reconcile_instances(Ctx(s, system, datetime.now(UTC)), again) == []
        s.commit()
    # Killed behind its back: the next reconcile marks it lost, with a fleet event.
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, iid, 10)
    assert again.is_running(iid) is False
    # The platform starts again: its lifespan reconciles before it serves.
    restarted = create_app(
        Settings(data_dir=p.data, port=p.port, provider="qemu", qemu_state_dir=p.state),
        provider=again,
    )

    async def start_and_stop() -> None:
        async with restarted.router.lifespan_context(restarted):
            pass

    anyio.run(start_and_stop)
    with Session(p.engine) as s:
        assert s.get(NodeInstance, iid).status == "failed"  # type: ignore[union-attr]
        kinds = s.scalars(select(FleetEvent.kind).where(FleetEvent.instance_id == iid)).all()
        assert "instance.lost" in kinds
    # What the lost VM left is cleaned up, the console kept; terminating it is refused (it ended).
    assert sorted(x.name for x in (p.state / iid).iterdir()) == ["claim", "console.log", "qemu.log"]
    assert p.api("POST", f"/node_instances/{iid}/terminate").status_code == 409
    assert "powernode-test: boot" in p.api("GET", f"/node_instances/{iid}/console").text


def test_two_concurrent_provisions_start_one_vm(
    pvh_image: Path, tmp_path: Path, vm_reaper: Callable[[Path], None]
) -> None:
    state = tmp_path / "state"
    vm_reaper(state)
    # Two platform processes on one host: two provider objects, one state directory.
    providers = [LocalQemuProvider(qemu_config(pvh_image, state, 9)) for _ in range(2)]
    iid = str(uuid.uuid4())
    request = ProvisionRequest(iid, "n", "h", "t", "pnb_test")
    barrier = threading.Barrier(2)
    results: list[object] = []

    def go(provider: LocalQemuProvider) -> None:
        barrier.wait(10)
        try:
            results.append(provider.provision(request))
        except ConflictError as e:
            results.append(e)

    threads = [threading.Thread(target=go, args=(pr,)) for pr in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "str"]
    (conflict,) = [r for r in results if isinstance(r, ConflictError)]
    assert "already has a VM" in str(conflict)
    assert len(vms_of(iid)) == 1
    # A third try, even after terminate, never starts a second VM for the instance.
    providers[0].terminate(iid)
    with pytest.raises(ConflictError):
        providers[1].provision(request)
    assert vms_of(iid) == []


def test_missing_image_files_start_nothing_and_write_nothing(
    qemu_platform: QemuPlatform, tmp_path: Path
) -> None:
    empty = tmp_path / "no-image"
    empty.mkdir()
    (empty / "vmlinux").write_bytes(b"")
    state = tmp_path / "state"
    provider = LocalQemuProvider(qemu_config(empty, state, 9))
    with pytest.raises(
        ProviderError, match=r"lacks initramfs.cpio or initrd.*powernode image build"
    ):
        provider.provision(ProvisionRequest(str(uuid.uuid4()), "n", "h", "t", "pnb_x"))
    assert not state.exists()
    # Through the platform: 502 with the reason, and no instance row, token or VM.
    p = qemu_platform
    p.node("vm-noimage")
    before = _rows(p)
    original = p.provider.config
    p.provider.config = qemu_config(empty, p.state, p.port)
    try:
        r = p.api("POST", "/node_instances", json={"node_id": "vm-noimage"})
    finally:
        p.provider.config = original
    assert r.status_code == 502, r.text
    assert "lacks initramfs.cpio or initrd" in r.json()["detail"]
    assert _rows(p) == before


def test_unknown_or_malformed_instance(qemu_platform: QemuPlatform, tmp_path: Path) -> None:
    p = qemu_platform
    unknown = str(uuid.uuid4())
    before = _rows(p)
    assert p.api("GET", f"/node_instances/{unknown}/console").status_code == 404
    assert p.api("POST", f"/node_instances/{unknown}/terminate").status_code == 404
    assert p.api("POST", "/node_instances", json={"node_id": "no-such-node"}).status_code == 404
    assert _rows(p) == before
    provider = LocalQemuProvider(qemu_config(tmp_path, tmp_path / "state", 9))
    for bad in ("../etc", "not-a-uuid", unknown.upper()):
        with pytest.raises(Exception, match="not a canonical UUID"):
            provider.provision(ProvisionRequest(bad, "n", "h", "t", "pnb_x"))
    assert not (tmp_path / "state").exists()
    provider.terminate(unknown)  # idempotent: nothing there, nothing done


def _rows(p: QemuPlatform) -> tuple[int, int, list[str]]:
    with Session(p.engine) as s:
        return (
            len(s.scalars(select(NodeInstance.id)).all()),
            len(s.scalars(select(BootstrapToken.id)).all()),
            sorted(x.name for x in p.state.iterdir()) if p.state.exists() else [],
        )


def test_auto_accel_probes_once_and_boots(
    pvh_image: Path,
    tmp_path: Path,
    vm_reaper: Callable[[Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``auto``: TCG without a usable /dev/kvm, else KVM only if a probe boot prints the banner
    (here /dev/kvm hangs a stock kernel: TCG). Whichever it picks boots, and it is remembered."""
    state = tmp_path / "state"
    vm_reaper(state)
    config = replace(qemu_config(pvh_image, state, 9), accel="auto", probe_timeout=10)
    provider = LocalQemuProvider(config)
    iid = str(uuid.uuid4())
    provider.provision(ProvisionRequest(iid, "n", "h", "t", "pnb_test"))
    chosen = provider.accel(pvh_image / "vmlinux")
    assert chosen in ("kvm", "tcg")
    if not qemu_accel.kvm_usable():
        assert chosen == "tcg"
    else:
        assert list(json.loads((state / qemu_accel.CACHE_NAME).read_text()).values()) == [chosen]

        def no_probe(*_: object) -> bool:
            raise AssertionError("probed again")

        monkeypatch.setattr(qemu_accel, "probe_kvm", no_probe)
        assert LocalQemuProvider(config).accel(pvh_image / "vmlinux") == chosen
    args = Path(f"/proc/{provider.pid(iid)}/cmdline").read_bytes().split(b"\0")
    assert args[args.index(b"-accel") + 1].decode() == chosen
    deadline = time.monotonic() + 120
    while b"powernode-test: ready" not in provider.console(iid, 1 << 20):
        assert time.monotonic() < deadline, provider.console(iid, 1 << 20).decode()
        time.sleep(0.25)
    provider.terminate(iid)


def test_a_first_module_set_is_on_the_persist_disk_and_in_the_seed(
    pvh_image: Path, tmp_path: Path, vm_reaper: Callable[[Path], None]
) -> None:
    """The instance's desired set: its images and objects in the store on the persist disk
    the provider formats (read back with debugfs), its ``modules.set`` in the fw-cfg seed
    tar; a module missing from the boot store is refused before anything is written."""
    import io
    import subprocess
    import tarfile

    from powernode.image.contract import PERSIST_STORE
    from powernode.platform.services.boot_set import BootModule
    from tests.image.guest import make_module

    require_tool("debugfs")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hello").write_bytes(b"hello " * 1000)
    store = tmp_path / "boot-store"
    m = make_module(src, "system-base", 10, store)
    state = tmp_path / "state"
    vm_reaper(state)
    config = replace(
        qemu_config(pvh_image, state, 9),
        boot_store=store,
        modules_registry="http://10.0.2.2:5000",
        modules_registry_name="127.0.0.1:5000",
    )
    provider = LocalQemuProvider(config)
    ghost = BootModule("ghost", 1, "sha256:" + "ab" * 32)
    iid = str(uuid.uuid4())
    with pytest.raises(ProviderError, match=r"lacks .*ghost"):
        provider.provision(ProvisionRequest(iid, "n", "h", "t", "pnb_test", (ghost,)))
    assert not (state / iid).exists()
    provider.provision(
        ProvisionRequest(iid, "n", "h", "t", "pnb_test", (BootModule(m.name, 10, m.digest),))
    )
    with tarfile.open(fileobj=io.BytesIO((state / iid / "seed.tar").read_bytes())) as tar:
        member = tar.extractfile("modules.set")
        assert member is not None
        assert f"10 system-base {m.hex}" in member.read().decode()
        seed_json = tar.extractfile("seed.json")
        assert seed_json is not None
        doc = json.loads(seed_json.read())
    # where the agent pulls later versions from, and the name their signatures carry
    assert (doc["modules_registry"], doc["modules_registry_name"]) == (
        "http://10.0.2.2:5000",
        "127.0.0.1:5000",
    )
    disk = state / iid / "persist.raw"

    def ls(path: str) -> str:
        argv = ["debugfs", "-R", f"ls -p /{PERSIST_STORE}/{path}", str(disk)]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    assert f"/{m.hex}.cfs/" in ls("images")
    assert ls("objects").count("/") > 0 and not (state / iid / "persist-tree").exists()
    assert not any(a.startswith(b"local,path=") for a in _args(provider, iid))  # no 9p share
    provider.terminate(iid)
    assert not disk.exists() and (state / iid / "console.log").exists()


def _args(provider: LocalQemuProvider, iid: str) -> list[bytes]:
    return Path(f"/proc/{provider.pid(iid)}/cmdline").read_bytes().split(b"\0")
