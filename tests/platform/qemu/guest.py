"""A guest for the QEMU tests: Debian's 6.12 kernel and a tiny busybox initramfs.

The powernode initramfs (90powernode) is built elsewhere; these tests need
only a guest that shows what the provider handed it. Its /init loads the
few modules it needs, prints the fw-cfg items and the kernel cmdline on the
serial console, fetches the platform's /healthz over user networking and
says ``ready``. The kernel package comes from the apt mirror once and stays
in the persistent .deb cache (tests/package_cache.py); its extraction, the
decompressed vmlinux (PVH entry: about 2 s less under TCG than vmlinuz) and
the decompressed modules are cached beside it.
"""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.package_cache import persistent_debs

KERNEL_GLOB = "linux-image-6.12.*+deb12-amd64-unsigned_*_amd64.deb"
MODULES = ("qemu_fw_cfg", "failover", "net_failover", "virtio_net", "virtio_blk")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # Debian's 6.12 is CONFIG_KERNEL_ZSTD
CMDLINE = "console=ttyS0 quiet panic=-1"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in qemu_fw_cfg failover net_failover virtio_net virtio_blk; do
    insmod /lib/modules/$m.ko 2>/dev/null
done
echo "powernode-test: boot"
FW=/sys/firmware/qemu_fw_cfg/by_name/opt/com.powernode
if [ -r $FW/instance_uuid/raw ]; then
    echo "powernode-test: instance_uuid=$(cat $FW/instance_uuid/raw)"
    mkdir -p /tmp/seed
    tar -x -f $FW/seed.tar/raw -C /tmp/seed
    echo "powernode-test: seed files: $(cd /tmp/seed && ls | tr '\n' ' ')"
    echo "powernode-test: seed-begin"
    cat /tmp/seed/seed.json
    echo "powernode-test: seed-end"
    echo "powernode-test: bootstrap-token=$(cat /tmp/seed/bootstrap-token)"
else
    echo "powernode-test: no fw-cfg items"
fi
echo "powernode-test: cmdline=$(cat /proc/cmdline)"
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
URL=$(sed -n 's/.*powernode\.platform=\([^ ]*\).*/\1/p' /proc/cmdline)
if timeout 30 wget -q -O /tmp/health "$URL/healthz"; then
    echo "powernode-test: platform says $(cat /tmp/health)"
else
    echo "powernode-test: platform unreachable at $URL"
fi
[ -b /dev/vda ] && echo "powernode-test: persist disk /dev/vda"
echo "powernode-test: ready"
while :; do sleep 3600; done
"""


def kernel_deb() -> Path:
    """The newest 6.12 kernel .deb in the persistent cache, downloaded with apt if none."""
    debs = persistent_debs()
    found = sorted(debs.glob(KERNEL_GLOB))
    if found:
        return found[-1]
    names = subprocess.run(
        ["apt-cache", "pkgnames", "linux-image-6.12."],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    wanted = sorted(n for n in names if n.endswith("+deb12-amd64-unsigned"))
    assert wanted, "apt knows no linux-image-6.12.*+deb12-amd64-unsigned (apt-get update?)"
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        subprocess.run(["apt-get", "download", "-q", wanted[-1]], cwd=tmp, check=True, timeout=600)
        (deb,) = Path(tmp).glob("*.deb")
        os.replace(deb, debs / deb.name)
    return sorted(debs.glob(KERNEL_GLOB))[-1]


def kernel_tree() -> Path:
    """The extracted kernel package with vmlinux and decompressed modules (cached)."""
    deb = kernel_deb()
    out = persistent_debs().parent / "qemu-guest" / deb.stem
    if (out / "done").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True, timeout=300)
    (vmlinuz,) = (tmp / "root" / "boot").glob("vmlinuz-*")
    shutil.copyfile(vmlinuz, tmp / "vmlinuz")
    blob = vmlinuz.read_bytes()
    # zstd stops at the end of the frame and complains of the bytes after it (exit 1).
    elf = subprocess.run(
        ["zstd", "-dc"],
        check=False,
        input=blob[blob.index(ZSTD_MAGIC) :],
        capture_output=True,
        timeout=120,
    ).stdout
    assert elf.startswith(b"\x7fELF"), "no ELF kernel in the vmlinuz's zstd payload"
    (tmp / "vmlinux").write_bytes(elf)
    mods = tmp / "modules"
    mods.mkdir()
    for name in MODULES:
        (ko,) = (tmp / "root" / "lib" / "modules").glob(f"*/kernel/**/{name}.ko.xz")
        (mods / f"{name}.ko").write_bytes(lzma.decompress(ko.read_bytes()))
    shutil.rmtree(tmp / "root")
    (tmp / "done").write_text(deb.name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def initramfs(tree: Path, dest: Path) -> Path:
    """An uncompressed newc cpio: busybox-static, /init and the modules."""
    busybox = Path("/bin/busybox")
    assert busybox.exists(), "busybox-static is not installed (apt-get install busybox-static)"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copyfile(busybox, root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        (root / "lib" / "modules").mkdir(parents=True)
        for ko in (tree / "modules").iterdir():
            shutil.copyfile(ko, root / "lib" / "modules" / ko.name)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        with dest.open("wb") as out:
            subprocess.run(
                ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                cwd=root,
                input="\n".join(files).encode(),
                stdout=out,
                check=True,
                timeout=60,
            )
    return dest


def image_dir(dest: Path, *, pvh: bool) -> Path:
    """An image build directory: vmlinuz, vmlinux (when ``pvh``), initramfs.cpio, cmdline."""
    tree = kernel_tree()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tree / "vmlinuz", dest / "vmlinuz")
    if pvh:
        shutil.copyfile(tree / "vmlinux", dest / "vmlinux")
    initramfs(tree, dest / "initramfs.cpio")
    (dest / "cmdline").write_text(CMDLINE + "\n")
    return dest
