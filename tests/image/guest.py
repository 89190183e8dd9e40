"""A node under QEMU (TCG): module stores, persist disks, seed bundles, the serial console."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from powernode.agent.modules.state import ModuleSpec
from powernode.image.bootlayout import boot_layout, render_module_set
from powernode.verity.composefs.writer import build_image

BOOT_TIMEOUT_S = 240  # TCG on a loaded 2-core machine; a boot takes ~15-30 s


@dataclass(frozen=True)
class Module:
    name: str
    priority: int
    digest: str  # sha256:<hex>

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")

    def spec(self) -> ModuleSpec:
        return ModuleSpec(self.name, self.digest, self.priority)


def make_module(src: Path, name: str, priority: int, store: Path) -> Module:
    """Write ``src`` as a composefs image into ``store``: images/<hex>.cfs + objects/."""
    (store / "images").mkdir(parents=True, exist_ok=True)
    tmp = store / "images" / f".{name}.cfs"
    result = build_image(src, tmp, digest_store=store / "objects")
    digest = str(result.digest)
    digest = digest if digest.startswith("sha256:") else f"sha256:{digest}"
    tmp.rename(store / "images" / f"{digest.removeprefix('sha256:')}.cfs")
    return Module(name, priority, digest)


def module_set(modules: list[Module]) -> str:
    return render_module_set(m.spec() for m in modules)


def seed_tar(set_text: str) -> bytes:
    """A seed bundle (tar) holding ``modules.set``, as fw-cfg carries it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = set_text.encode()
        info = tarfile.TarInfo("modules.set")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def persist_disk(state_tree: Path, image: Path, size_mb: int = 96) -> Path:
    """An ext4 file system with the verity feature, holding ``state_tree`` at the state dir."""
    root = state_tree.parent / f"{state_tree.name}-fs"
    shutil.rmtree(root, ignore_errors=True)
    rel = Path(boot_layout().state_dir).relative_to(boot_layout().persist_mnt)
    (root / rel).parent.mkdir(parents=True)
    shutil.copytree(state_tree, root / rel, symlinks=True)
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-O",
            "verity",
            "-L",
            boot_layout().persist_label,
            "-d",
            str(root),
            str(image),
            f"{size_mb}M",
        ],
        check=True,
        capture_output=True,
    )
    return image


@dataclass
class Boot:
    console: str
    returncode: int | None
    seconds: float


def boot(
    kernel_initrd: Path,
    disk: Path,
    workdir: Path,
    *,
    seed: bytes | None = None,
    instance_id: str | None = None,
    extra_cmdline: str = "",
    seed_dir: Path | None = None,
) -> Boot:
    """Boot under TCG until the guest powers off or BOOT_TIMEOUT_S; return the console."""
    console = workdir / "console.log"
    cmdline = (kernel_initrd / "cmdline").read_text().strip()
    cmdline = cmdline.replace(" quiet", "") + " powernode.on_stop=poweroff " + extra_cmdline
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{console}",
        "-kernel",
        str(kernel_initrd / "vmlinux"),  # PVH: faster than vmlinuz under TCG
        "-initrd",
        str(kernel_initrd / "initramfs.cpio"),
        "-append",
        cmdline.strip(),
        "-drive",
        f"file={disk},format=raw,if=virtio",
    ]
    if instance_id is not None:
        argv += ["-fw_cfg", f"name={boot_layout().fwcfg_id_item},string={instance_id}"]
    if seed is not None:
        seed_file = workdir / "seed.tar"
        seed_file.write_bytes(seed)
        argv += ["-fw_cfg", f"name={boot_layout().fwcfg_seed_item},file={seed_file}"]
    if seed_dir is not None:  # a seed bundle over virtio-9p
        argv += [
            "-virtfs",
            f"local,path={seed_dir},mount_tag={boot_layout().p9_tag},"
            "security_model=none,readonly=on",
        ]
    start = time.monotonic()
    with (workdir / "qemu.stderr").open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        proc.wait(timeout=BOOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        rc = None
    else:
        rc = proc.returncode
    text = console.read_text(errors="replace") if console.exists() else ""
    text += (workdir / "qemu.stderr").read_text(errors="replace")
    return Boot(text, rc, time.monotonic() - start)


def new_id() -> str:
    return str(uuid.uuid4())


def qemu_usable() -> bool:
    return os.path.exists("/usr/bin/qemu-system-x86_64")
