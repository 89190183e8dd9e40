"""The guest kernel from Debian's package: the image, its config, and the modules the boot needs.

The .deb ships modules as ``.ko.xz`` and no ``modules.dep``. The modules an
initramfs needs are closed over their ``depends=`` (the ``.modinfo`` the
kernel build wrote into each module), decompressed (busybox ``insmod``
loads plain ``.ko``), and listed in load order, dependencies first; ``depmod``
then writes ``modules.dep`` for the initramfs's tree. The closure is cached
per kernel package SHA-256, so a warm build does not read the 100 MB .deb.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import ConfigError, DataError
from powernode.image.debs import Deb, read_members
from powernode.run import run

_MODINFO_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: str  # relative to lib/modules/<release>/, ".ko"
    data: bytes


@dataclass(frozen=True)
class Kernel:
    release: str  # uname -r, e.g. 6.12.118+deb12-amd64
    image: bytes  # /boot/vmlinuz-<release>
    config: str  # /boot/config-<release>
    modules: tuple[KernelModule, ...]  # load order, dependencies first

    def option(self, name: str) -> str:
        m = re.search(rf"^{re.escape(name)}=(.*)$", self.config, re.M)
        return m.group(1) if m else "n"


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def _depends(ko: bytes) -> list[str]:
    m = _MODINFO_DEPENDS.search(ko)
    if m is None or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def _closure(
    wanted: tuple[str, ...], available: dict[str, str], read: dict[str, bytes], builtin: set[str]
) -> list[KernelModule]:
    order: list[KernelModule] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen or name in builtin:
            return
        if name in chain:
            raise DataError(f"kernel module dependency cycle: {' -> '.join((*chain, name))}")
        if name not in available:
            raise ConfigError(
                f"kernel module {name} (needed by {chain or 'the image'}): "
                "not in the kernel package and not built in"
            )
        path = available[name]
        data = lzma.decompress(read[path]) if path.endswith(".xz") else read[path]
        for dep in _depends(data):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append(KernelModule(name, path.removesuffix(".xz"), data))

    for name in wanted:
        visit(name, ())
    return order


def extract(deb: Deb, wanted: tuple[str, ...], cache: Path) -> Kernel:
    """The kernel and the closure of ``wanted`` modules, from ``cache`` or the .deb."""
    wanted_key = hashlib.sha256(",".join(wanted).encode()).hexdigest()[:16]
    key = cache / f"kernel-{deb.sha256[:24]}-{wanted_key}"
    if (key / "kernel.json").is_file():
        return _load(key)
    members = read_members(
        deb,
        lambda p: (
            p.startswith(("boot/vmlinuz-", "boot/config-"))
            or (
                p.startswith("lib/modules/")
                and (p.endswith((".ko", ".ko.xz")) or p.endswith("/modules.builtin"))
            )
        ),
    )
    vmlinuz = [p for p in members if p.startswith("boot/vmlinuz-")]
    if len(vmlinuz) != 1:
        raise DataError(f"{deb.path.name}: expected one boot/vmlinuz-*, found {vmlinuz}")
    release = vmlinuz[0].removeprefix("boot/vmlinuz-")
    prefix = f"lib/modules/{release}/"
    builtin_text = members.get(prefix + "modules.builtin", (0, b""))[1].decode()
    builtin = {module_name(line) for line in builtin_text.split()}
    available: dict[str, str] = {}
    raw: dict[str, bytes] = {}
    for p, (_, data) in members.items():
        if p.startswith(prefix) and ".ko" in p:
            available[module_name(p)] = p.removeprefix(prefix)
            raw[p.removeprefix(prefix)] = data
    modules = _closure(wanted, available, raw, builtin)
    kernel = Kernel(
        release,
        members[vmlinuz[0]][1],
        members[f"boot/config-{release}"][1].decode(),
        tuple(modules),
    )
    _store(kernel, key)
    return kernel


def _store(kernel: Kernel, key: Path) -> None:
    key.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=key.parent, prefix=".partial-"))
    (tmp / "vmlinuz").write_bytes(kernel.image)
    (tmp / "config").write_text(kernel.config)
    for m in kernel.modules:
        dest = tmp / "modules" / m.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(m.data)
    order = [{"name": m.name, "path": m.path} for m in kernel.modules]
    (tmp / "kernel.json").write_text(json.dumps({"release": kernel.release, "modules": order}))
    shutil.rmtree(key, ignore_errors=True)
    tmp.rename(key)


def _load(key: Path) -> Kernel:
    doc = json.loads((key / "kernel.json").read_text())
    mods = tuple(
        KernelModule(m["name"], m["path"], (key / "modules" / m["path"]).read_bytes())
        for m in doc["modules"]
    )
    return Kernel(
        doc["release"], (key / "vmlinuz").read_bytes(), (key / "config").read_text(), mods
    )


def depmod_files(kernel: Kernel) -> dict[str, bytes]:
    """``modules.dep`` and friends for exactly ``kernel.modules`` (``depmod -b``)."""
    with tempfile.TemporaryDirectory(prefix="powernode-depmod-") as d:
        base = Path(d) / "lib" / "modules" / kernel.release
        for m in kernel.modules:
            (base / m.path).parent.mkdir(parents=True, exist_ok=True)
            (base / m.path).write_bytes(m.data)
        run(["depmod", "-b", d, kernel.release])
        return {
            p.name: p.read_bytes()
            for p in sorted(base.iterdir())
            if p.is_file() and p.name.startswith("modules.")
        }


def uncompressed_elf(bzimage: bytes) -> bytes:
    """The ELF kernel inside an x86 bzImage (its PVH entry lets QEMU boot it directly).

    The compressed payload is located by the boot protocol's setup header
    (Documentation/arch/x86/boot.rst: ``setup_sects`` at 0x1f1, ``payload_offset``
    and ``payload_length`` at 0x248, from the start of the protected-mode code);
    Linux appends the uncompressed size (4 bytes, little-endian) to it.
    """
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise DataError("not an x86 bzImage (no HdrS setup header)")
    pm_start = ((bzimage[0x1F1] or 4) + 1) * 512
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    payload = bzimage[pm_start + offset : pm_start + offset + length]
    size = struct.unpack("<I", payload[-4:])[0]
    if payload.startswith(b"\x28\xb5\x2f\xfd"):  # zstd
        elf = run(["zstd", "-q", "-d", "-c"], input=payload[:-4]).stdout
    elif payload.startswith(b"\xfd7zXZ\x00"):
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload[:-4])
    else:
        raise DataError(
            f"bzImage payload compressed with an unsupported method ({payload[:4].hex()})"
        )
    if not elf.startswith(b"\x7fELF") or len(elf) != size:
        raise DataError(f"bzImage payload: {len(elf)} bytes of non-ELF or wrong size (want {size})")
    return elf
