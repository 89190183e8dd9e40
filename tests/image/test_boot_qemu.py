"""A real node boot under QEMU (TCG): the Debian 6.12 kernel and our initramfs compose the root.

The persist disk is ext4 with the verity feature (``mkfs.ext4 -O verity -d``);
the initramfs enables fs-verity on every object (FS_IOC_ENABLE_VERITY) and
mounts the composefs lowers with ``verity=require``. The composed root's
/sbin/init (busybox) reports what it reads, on the serial console:

- a good boot: identity from fw-cfg, the two modules stacked by priority, and
  a tampered object reading as EIO inside the guest;
- a module image whose digest does not match its set: refused with a
  console message, nothing mounted; and with a last good set on the persist
  store, that set boots instead;
- a reboot into the set the last walk stamped skips the walk, and an object
  planted on the disk between the boots (no fs-verity) still reads as EIO.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from powernode.image.bootlayout import boot_layout
from powernode.image.debs import fetch, read_members
from tests.conftest import require_tool
from tests.image.guest import Module, boot, make_module, module_set, new_id, persist_disk, seed_tar
from tests.package_cache import persistent_debs

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

ROOT_INIT = """#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
echo "ROOT-INIT: up, hello=$(cat /etc/hello)"
if cat /etc/tampered >/dev/null 2>/tmp/err; then echo "ROOT-INIT: tampered READABLE"; \
else echo "ROOT-INIT: tampered unreadable: $(cat /tmp/err)"; fi
echo "ROOT-INIT: intact=$(head -c 20 /etc/intact)"
echo "ROOT-INIT: mounts $(grep -c ' overlay ' /proc/mounts) overlay"
sync
poweroff -f
"""
PAYLOAD = b"powernode object payload, long enough to live outside the image\n" * 200


@pytest.fixture(scope="module")
def busybox() -> bytes:
    deb = fetch("busybox-static", "amd64", persistent_debs())
    return read_members(deb, lambda p: p == "bin/busybox")["bin/busybox"][1]


def _modules(tmp: Path, busybox: bytes, store: Path) -> tuple[Module, Module, str]:
    """base (10): busybox, /sbin/init, /etc/hello=base; app (20): /etc/hello=app and payloads."""
    base = tmp / "src-base"
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "persist"):
        (base / d).mkdir(parents=True)
    (base / "bin" / "busybox").write_bytes(busybox)
    (base / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "cat", "echo", "mount", "grep", "head", "sync", "poweroff"):
        (base / "bin" / applet).symlink_to("busybox")
    (base / "sbin" / "init").write_text(ROOT_INIT)
    (base / "sbin" / "init").chmod(0o755)
    (base / "etc" / "hello").write_text("base\n")
    app = tmp / "src-app"
    (app / "etc").mkdir(parents=True)
    (app / "etc" / "hello").write_text("app\n")
    (app / "etc" / "tampered").write_bytes(PAYLOAD)
    (app / "etc" / "intact").write_bytes(b"intact " + PAYLOAD)
    m_base = make_module(base, "base", 10, store)
    m_app = make_module(app, "app", 20, store)
    from powernode.verity.fsverity import fsverity_digest

    tampered = fsverity_digest(PAYLOAD).hex()
    return m_base, m_app, f"{tampered[:2]}/{tampered[2:]}"


def _require_qemu() -> None:
    for tool in ("qemu-system-x86_64", "mkfs.ext4"):
        require_tool(tool)


def test_boot_composes_root_with_verity_and_tamper_reads_eio(
    kernel_initrd: Path, busybox: bytes, tmp_path: Path
) -> None:
    _require_qemu()
    state = tmp_path / "state"
    m_base, m_app, tampered = _modules(tmp_path, busybox, state)
    obj = state / "objects" / tampered
    data = bytearray(obj.read_bytes())
    data[100] ^= 0xFF  # same size, other content: its fs-verity digest no longer matches
    obj.chmod(0o644)
    obj.write_bytes(bytes(data))
    disk = persist_disk(state, tmp_path / "persist.img")
    instance = new_id()
    res = boot(
        kernel_initrd,
        disk,
        tmp_path,
        seed=seed_tar(module_set([m_base, m_app])),
        instance_id=instance,
    )
    c = res.console
    assert f"powernode: identity {instance} from fwcfg" in c, c
    assert "identity: cmdline: no powernode.id=" in c
    assert "module set: seed bundle over fw-cfg" in c
    assert re.search(r"verity: enabled [1-9]\d*, already 0", c), c
    assert "root composed on /sysroot: app base (verity=require)" in c, c
    assert "ROOT-INIT: up, hello=app" in c, c
    assert "ROOT-INIT: tampered unreadable:" in c and "Input/output error" in c, c
    assert "tampered READABLE" not in c
    assert "ROOT-INIT: intact=intact powernode obj" in c, c
    assert res.returncode == 0, c


def test_refused_image_stops_with_message_and_mounts_nothing(
    kernel_initrd: Path, busybox: bytes, tmp_path: Path
) -> None:
    _require_qemu()
    state = tmp_path / "state"
    m_base, m_app, _ = _modules(tmp_path, busybox, state)
    image = state / "images" / f"{m_app.hex}.cfs"
    data = bytearray(image.read_bytes())
    data[-1] ^= 0x01
    image.write_bytes(bytes(data))
    disk = persist_disk(state, tmp_path / "persist.img")
    res = boot(
        kernel_initrd,
        disk,
        tmp_path,
        seed=seed_tar(module_set([m_base, m_app])),
        instance_id=new_id(),
    )
    c = res.console
    assert (
        "refused module app: image digest sha256:" in c and f"the set says {m_app.digest}" in c
    ), c
    assert "boot stopped: module set refused and no last good set" in c, c
    assert "nothing was mounted" in c
    assert "root composed" not in c and "ROOT-INIT" not in c and "switch_root" not in c, c
    assert res.returncode == 0, c  # powernode.on_stop=poweroff


def test_refused_set_falls_back_to_last_good(
    kernel_initrd: Path, busybox: bytes, tmp_path: Path
) -> None:
    _require_qemu()
    state = tmp_path / "state"
    m_base, m_app, _ = _modules(tmp_path, busybox, state)
    # the last good set (base alone) is on the persist store; the seed brings a broken app
    boot_set = Path(boot_layout().boot_set).relative_to(boot_layout().state_dir)
    (state / boot_set).parent.mkdir(parents=True, exist_ok=True)
    (state / boot_set).write_text(module_set([m_base]))
    image = state / "images" / f"{m_app.hex}.cfs"
    broken = bytearray(image.read_bytes())
    broken[-1] ^= 0x01
    image.write_bytes(bytes(broken))
    disk = persist_disk(state, tmp_path / "persist.img")
    res = boot(
        kernel_initrd,
        disk,
        tmp_path,
        seed=seed_tar(module_set([m_base, m_app])),
        instance_id=new_id(),
    )
    c = res.console
    assert "refused module app" in c, c
    assert "booting the last good set" in c, c
    assert "root composed on /sysroot: base (verity=require)" in c, c
    assert "ROOT-INIT: up, hello=base" in c, c


def test_first_boot_imports_a_9p_seed_and_a_reboot_uses_the_persist_store(
    kernel_initrd: Path, busybox: bytes, tmp_path: Path
) -> None:
    """Boot 1: an empty persist store and a seed over virtio-9p with the set and its store.
    Boot 2: the same seed again. Boot 3, same disk, no seed: the persist store's last good set."""
    _require_qemu()
    seed = tmp_path / "seed"
    m_base, m_app, _ = _modules(tmp_path, busybox, seed / "store")
    (seed / "modules.set").write_text(module_set([m_base, m_app]))
    empty = tmp_path / "empty"
    empty.mkdir()
    disk = persist_disk(empty, tmp_path / "persist.img")
    instance = new_id()
    first = boot(
        kernel_initrd, disk, tmp_path, seed_dir=seed, extra_cmdline=f"powernode.id={instance}"
    )
    c = first.console
    assert f"powernode: identity {instance} from cmdline" in c, c
    assert "module set: seed bundle over virtio-9p powernode-seed" in c, c
    assert "root composed on /sysroot: app base (verity=require)" in c, c
    assert "ROOT-INIT: up, hello=app" in c, c
    (tmp_path / "console.log").unlink()
    # the same seed again (a provider passes it on every boot): applied once, so the boot
    # takes the persist store's last good set (which the agent keeps current)
    again = boot(
        kernel_initrd, disk, tmp_path, seed_dir=seed, extra_cmdline=f"powernode.id={instance}"
    )
    c = again.console
    assert "module set: the seed bundle's set was applied on an earlier boot" in c, c
    assert "module set: the persist store's last good set" in c, c
    assert "root composed on /sysroot: app base (verity=require)" in c, c
    (tmp_path / "console.log").unlink()
    second = boot(kernel_initrd, disk, tmp_path, extra_cmdline=f"powernode.id={instance}")
    c = second.console
    assert "module set: the persist store's last good set" in c, c
    assert "verity: enabled 0, already " in c, c  # enabled on the first boot, kept on disk
    assert "root composed on /sysroot: app base (verity=require)" in c, c
    assert "ROOT-INIT: up, hello=app" in c, c


def test_the_providers_seed_over_fw_cfg_and_first_set_on_the_persist_disk(
    kernel_initrd: Path, busybox: bytes, tmp_path: Path
) -> None:
    """What LocalQemuProvider hands a new instance: the seed bundle (seed.json, token, the
    first set's modules.set) as a tar over fw-cfg, and that set's images and objects already
    in the node's store on the persist disk it formats (boot_set.write_persist_tree): the
    initramfs copies nothing, enables fs-verity on the store in one process and composes."""
    from powernode.image.contract import PERSIST_STORE
    from powernode.platform.services.boot_set import BootModule, write_persist_tree
    from powernode.platform.services.seed_bundle import Seed

    _require_qemu()
    store = tmp_path / "boot-store"
    m_base, m_app, _ = _modules(tmp_path, busybox, store)
    instance = new_id()
    modules = tuple(BootModule(m.name, m.priority, m.digest) for m in (m_base, m_app))
    set_text, n = write_persist_tree(modules, store, tmp_path / "tree")
    assert n > 2
    seed = Seed(instance, "https://10.0.2.2:1", "", "pnb_x", set_text).to_tar()
    # persist_disk takes the state directory's tree; the provider's is rooted at the disk
    disk = persist_disk(tmp_path / "tree" / PERSIST_STORE, tmp_path / "persist.img")
    got = boot(kernel_initrd, disk, tmp_path, seed=seed, instance_id=instance)
    c = got.console
    assert "module set: seed bundle over fw-cfg opt/com.powernode/seed.tar" in c, c
    assert re.search(rf"verity: enabled {n}, already 0", c), c
    assert "root composed on /sysroot: app base (verity=require)" in c, c
    assert "seed bundle bound at /etc/powernode/seed" in c, c
    assert "ROOT-INIT: up, hello=app" in c, c


def test_a_reboot_keeps_verity_without_a_walk_and_a_planted_object_reads_eio(
    kernel_initrd: Path, busybox: bytes, tmp_path: Path
) -> None:
    """Boot 1 enables fs-verity on the whole store and stamps the set. Between boots an
    object is replaced on the disk behind the initramfs's back (debugfs: a new inode,
    without fs-verity, other content). Boot 2, same set: the initramfs skips the walk
    (the stamp), and the union's verity=require still makes the planted object EIO."""
    _require_qemu()
    require_tool("debugfs")
    state = tmp_path / "state"
    m_base, m_app, tampered = _modules(tmp_path, busybox, state)
    disk = persist_disk(state, tmp_path / "persist.img")
    instance = new_id()
    seed = seed_tar(module_set([m_base, m_app]))
    first = boot(kernel_initrd, disk, tmp_path, seed=seed, instance_id=instance)
    c = first.console
    assert re.search(r"verity: enabled [1-9]\d*, already 0\n", c), c
    assert "ROOT-INIT: tampered READABLE" in c, c  # intact on this boot
    (tmp_path / "console.log").unlink()
    planted = tmp_path / "planted"
    data = bytearray(PAYLOAD)
    data[100] ^= 0xFF
    planted.write_bytes(bytes(data))
    where = Path(boot_layout().objects_dir).relative_to(boot_layout().persist_mnt)
    obj_dir, name = tampered.split("/")
    cmds = tmp_path / "debugfs.cmds"
    cmds.write_text(f"cd /{where}/{obj_dir}\nrm {name}\nwrite {planted} {name}\n")
    subprocess.run(["debugfs", "-w", "-f", str(cmds), str(disk)], check=True, capture_output=True)
    again = boot(kernel_initrd, disk, tmp_path, seed=seed, instance_id=instance)
    c = again.console
    assert "module set: the persist store's last good set" in c, c
    assert re.search(r"verity: enabled 0, already [1-9]\d* \(kept: enabled by an earlier", c), c
    assert "root composed on /sysroot: app base (verity=require)" in c, c
    assert "ROOT-INIT: tampered unreadable:" in c and "Input/output error" in c, c
    assert "ROOT-INIT: intact=intact powernode obj" in c, c
