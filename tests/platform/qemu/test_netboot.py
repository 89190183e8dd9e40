"""Netboot: the per-instance iPXE script, served without a token, booted by QEMU's iPXE ROM.

Proves: the script names the platform's kernel and initrd URLs and a cmdline
with the instance id and platform URL, and holds no secret; unknown,
malformed and ended instances get the same 404; Debian's ipxe-qemu ROM,
pointed at the script by user networking's ``bootfile=``, boots the
kernel-initrd and the test initramfs comes up with the instance id.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from powernode.platform.services import nodes
from powernode.platform.services.context import Ctx
from powernode.platform.services.providers import RecordingProvider
from tests.platform.qemu.conftest import ADMIN, QemuPlatform

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")


def _instance(p: QemuPlatform, hostname: str) -> str:
    """A live instance row (the provider does not matter to netboot: no VM from it)."""
    p.node(hostname)
    with Session(p.engine) as s:
        ctx = Ctx(s, ADMIN, datetime.now(UTC))
        iid = nodes.provision_instance(ctx, RecordingProvider(), hostname).id
        s.commit()
    return iid


def _get(p: QemuPlatform, path: str) -> httpx.Response:
    with httpx.Client(base_url=p.url, timeout=60) as c:  # no Authorization header
        return c.get("/api/v1/system/netboot/" + path)


def test_script_names_kernel_initrd_and_identity_and_no_secret(
    qemu_platform: QemuPlatform, netboot_image: Path
) -> None:
    p = qemu_platform
    iid = _instance(p, "netboot-script")
    r = _get(p, f"{iid}/script.ipxe")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    base = f"http://10.0.2.2:{p.port}/api/v1/system/netboot/{iid}"
    assert r.text.splitlines() == [
        "#!ipxe",
        f"# powernode netboot: instance {iid}",
        f"kernel {base}/kernel initrd=initrd console=ttyS0 quiet panic=-1 "
        f"powernode.id={iid} powernode.platform=http://10.0.2.2:{p.port}",
        f"initrd --name initrd {base}/initrd",
        "boot",
    ]
    assert "pnb_" not in r.text
    assert "pnt_" not in r.text
    assert _get(p, f"{iid}/kernel").content == (netboot_image / "vmlinuz").read_bytes()
    assert _get(p, f"{iid}/initrd").content == (netboot_image / "initramfs.cpio").read_bytes()


def test_unknown_malformed_and_ended_instances_get_the_same_404(
    qemu_platform: QemuPlatform,
) -> None:
    p = qemu_platform
    ended = _instance(p, "netboot-ended")
    with Session(p.engine) as s:
        nodes.terminate_instance(Ctx(s, ADMIN, datetime.now(UTC)), RecordingProvider(), ended)
        s.commit()
    for ref in (ended, "3f0c1b8e-0000-4000-8000-000000000000", "not-a-uuid", ended.upper()):
        for item in ("script.ipxe", "kernel", "initrd"):
            r = _get(p, f"{ref}/{item}")
            assert r.status_code == 404, (ref, item, r.text)
            assert r.json()["detail"] == f"no live instance {ref!r} to netboot"


def test_ipxe_rom_boots_the_instance(qemu_platform: QemuPlatform, tmp_path: Path) -> None:
    if not IPXE_ROM.exists() or shutil.which("qemu-system-x86_64") is None:
        pytest.fail(f"{IPXE_ROM} or qemu-system-x86_64 missing: apt-get install ipxe-qemu")
    p = qemu_platform
    iid = _instance(p, "netboot-boot")
    console = tmp_path / "console.log"
    url = f"http://10.0.2.2:{p.port}/api/v1/system/netboot/{iid}/script.ipxe"
    args = [
        *("qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "256"),
        # No -nodefaults: without a VGA device SeaBIOS 1.16 runs no NIC option ROM
        # (measured: "No bootable device"), so the default VGA stays, undisplayed.
        *("-display", "none", "-monitor", "none", "-no-reboot"),
        *("-serial", f"file:{console}"),
        *("-netdev", f"user,id=n0,bootfile={url}"),
        # The NIC first in the boot order; its ROM is QEMU's default for virtio-net-pci,
        # efi-virtio.rom, which Debian's QEMU finds in ipxe-qemu's /usr/lib/ipxe/qemu.
        # (Measured: `-boot n` or an explicit romfile= path gave "No bootable device".)
        *("-device", "virtio-net-pci,netdev=n0,bootindex=1"),
    ]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = ""
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "powernode-test: ready" in text:
                break
            time.sleep(0.5)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert "powernode-test: ready" in text, f"console:\n{text}\nqemu:\n{err.decode()[-2000:]}"
    assert "powernode-test: no fw-cfg items" in text  # all it had came from the script
    assert f"powernode.id={iid}" in text
    assert 'powernode-test: platform says {"status":"ok"}' in text
