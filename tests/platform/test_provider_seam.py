"""The provider seam without a VM: settings choose the provider, the seed bundle's
format, netboot and console answers when there is nothing to boot or read.

The VMs themselves are tests/platform/qemu (marker ``qemu``).
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from powernode.platform.services import nodes
from powernode.platform.services.providers import RecordingProvider, provider_of
from powernode.platform.services.qemu_provider import LocalQemuProvider
from powernode.platform.services.seed_bundle import Seed
from powernode.platform.settings import Settings
from tests.platform.conftest import Platform


def test_settings_choose_the_provider(tmp_path: Path) -> None:
    assert isinstance(provider_of(Settings(data_dir=tmp_path)), RecordingProvider)
    s = Settings(data_dir=tmp_path, provider="qemu", port=8555, qemu_vcpus=2, qemu_accel="tcg")
    p = provider_of(s)
    assert isinstance(p, LocalQemuProvider)
    assert p.config.platform_url == "http://10.0.2.2:8555"
    assert p.config.image_dir == tmp_path / "images" / "kernel-initrd" / "amd64"
    assert p.config.state_dir == tmp_path / "instances"
    assert (p.config.vcpus, p.config.accel, p.config.qemu_binary) == (
        2,
        "tcg",
        "qemu-system-x86_64",
    )
    aarch64 = provider_of(Settings(data_dir=tmp_path, provider="qemu", qemu_arch="aarch64"))
    assert isinstance(aarch64, LocalQemuProvider)
    assert aarch64.config.qemu_binary == "qemu-system-aarch64"
    with pytest.raises(ValueError, match="provider"):
        Settings(data_dir=tmp_path, provider="libvirt")  # type: ignore[arg-type]


def test_seed_bundle_is_a_deterministic_tar() -> None:
    iid = str(uuid.uuid4())
    seed = Seed(iid, "http://10.0.2.2:8400", "-----BEGIN CERTIFICATE-----\n", "pnb_x")
    blob = seed.to_tar()
    assert (
        blob == Seed(iid, "http://10.0.2.2:8400", "-----BEGIN CERTIFICATE-----\n", "pnb_x").to_tar()
    )
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["bootstrap-token", "platform-ca.pem", "seed.json"]
        assert members["bootstrap-token"].mode == 0o600
        assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}
        manifest = json.loads(tar.extractfile("seed.json").read())  # type: ignore[union-attr]
        assert tar.extractfile("bootstrap-token").read() == b"pnb_x\n"  # type: ignore[union-attr]
    assert manifest == {
        "format": "powernode-seed/1",
        "instance_id": iid,
        "platform_url": "http://10.0.2.2:8400",
    }
    # No CA (plain HTTP): no platform-ca.pem.
    with tarfile.open(fileobj=io.BytesIO(Seed(iid, "u", "", "t").to_tar())) as tar:
        assert tar.getnames() == ["bootstrap-token", "seed.json"]


def _instance(platform: Platform) -> str:
    r = platform.call("POST", "/nodes", json={"hostname": "seam-1", "node_template_id": "base"})
    assert r.status_code == 201, r.text
    r = platform.call("POST", "/node_instances", json={"node_id": "seam-1"})
    assert r.status_code == 201, r.text
    iid: str = r.json()["instance"]["id"]
    return iid


def test_recording_provider_gets_no_token_and_keeps_no_console(platform: Platform) -> None:
    iid = _instance(platform)
    assert platform.provider.provisioned[-1].bootstrap_token is None
    assert platform.count("bootstrap_tokens") == 0
    r = platform.call("GET", f"/node_instances/{iid}/console", role="read")
    assert r.status_code == 404
    assert "keeps no serial console" in r.json()["detail"]
    assert platform.call("GET", f"/node_instances/{uuid.uuid4()}/console").status_code == 404
    assert platform.raw("GET", f"/api/v1/system/node_instances/{iid}/console").status_code == 401


def test_netboot_without_an_image_is_a_clear_404(platform: Platform) -> None:
    iid = _instance(platform)
    before = platform.snapshot()
    for item in ("script.ipxe", "kernel", "initrd"):
        r = platform.raw("GET", f"/api/v1/system/netboot/{iid}/{item}")  # no token
        assert r.status_code == 404, r.text
        assert "serves no netboot image" in r.json()["detail"]
        assert "lacks vmlinux or vmlinuz or kernel; initramfs.cpio or initrd" in r.json()["detail"]
    assert platform.snapshot() == before


def test_a_failed_provision_leaves_no_machine(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider started a machine, then the unit failed (here: the audit write): the
    row rolls back and the machine is terminated, never left running without a row."""
    r = platform.call("POST", "/nodes", json={"hostname": "seam-2", "node_template_id": "base"})
    assert r.status_code == 201, r.text
    before = platform.snapshot()

    def broken_audit(*_: object, **__: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(nodes.audit, "record", broken_audit)
    with pytest.raises(RuntimeError, match="went away"):
        platform.call("POST", "/node_instances", json={"node_id": "seam-2"})
    (started,) = platform.provider.provisioned
    assert platform.provider.terminated == [f"recorded-{started.instance_id}"]
    assert platform.snapshot() == before


def test_the_provider_boots_an_image_build_directory(tmp_path: Path) -> None:
    from powernode.platform.services import boot_image

    d = tmp_path / "img"
    d.mkdir()
    for name in ("vmlinux", "vmlinuz", "initramfs.cpio"):
        (d / name).write_bytes(name.encode())
    (d / "cmdline").write_text("console=ttyS0 quiet\n")
    image = boot_image.load(d)
    # PVH ELF for QEMU (faster under TCG), the bzImage for netboot.
    assert (image.kernel.name, image.netboot_kernel) == ("vmlinux", d / "vmlinuz")
    assert image.initrd == d / "initramfs.cpio" and image.cmdline == "console=ttyS0 quiet"
    (d / "vmlinux").unlink()
    assert boot_image.load(d).kernel == d / "vmlinuz"
    (d / "vmlinuz").unlink()
    with pytest.raises(Exception, match="lacks vmlinux or vmlinuz or kernel:"):
        boot_image.load(d)


def test_one_persist_label_for_the_image_and_the_provider() -> None:
    from powernode.image.bootlayout import boot_layout
    from powernode.image.contract import LABEL_MAX, PERSIST_LABEL
    from powernode.platform.services import qemu_provider

    assert boot_layout().persist_label == PERSIST_LABEL
    assert len(PERSIST_LABEL.encode()) <= LABEL_MAX  # mkfs.ext4 truncates longer ones
    assert qemu_provider.PERSIST_LABEL is PERSIST_LABEL
