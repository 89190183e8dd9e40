"""``powernode image build``: boot artifacts from Debian packages, byte-identical on rebuild.

A variant is a function from (architecture, inputs) to named files; the
table :data:`VARIANTS` holds them (``kernel-initrd`` today; disk images and
arm64 follow the same shape). Every variant's output directory gets
``SHA256SUMS``, ``FSVERITY-DIGESTS`` (``sha256:<hex> <file>``, the digests
fs-verity would measure, computed in userspace) and ``build-manifest.json``
(every input: packages with exact versions and SHA-256s, tool versions, the
kernel release and the config options relied on, SOURCE_DATE_EPOCH, the
cmdline). The directory is written beside its final place and renamed in,
so a failed build leaves the previous one untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from powernode import __version__
from powernode.errors import ConfigError
from powernode.image import initramfs
from powernode.image.debs import Deb, fetch_all, newest_name, tool_version
from powernode.image.kernel import extract, uncompressed_elf
from powernode.toolchain.build.packages import DEBS_DIR, default_cache_dir
from powernode.verity.fsverity import fsverity_digest

DEFAULT_EPOCH = 1_700_000_000  # when SOURCE_DATE_EPOCH is not set


@dataclass(frozen=True)
class Arch:
    name: str  # Debian architecture
    kernel_package: str  # full-match regex over package names; the newest wins
    triplet: str
    loader: str
    console: str
    # Config options the boot relies on (the build fails if one is off)
    config: tuple[str, ...] = (
        "CONFIG_FS_VERITY",
        "CONFIG_EROFS_FS",
        "CONFIG_EROFS_FS_BACKED_BY_FILE",
        "CONFIG_OVERLAY_FS",
        "CONFIG_EXT4_FS",
        "CONFIG_VIRTIO_BLK",
        "CONFIG_DEVTMPFS",
        "CONFIG_BLK_DEV_INITRD",
        "CONFIG_FW_CFG_SYSFS",
        "CONFIG_9P_FS",
        "CONFIG_VIRTIO_NET",
        "CONFIG_NET_9P_VIRTIO",
    )


ARCHES = {
    "amd64": Arch(
        "amd64",
        r"linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned",
        "x86_64-linux-gnu",
        "lib64/ld-linux-x86-64.so.2",
        "ttyS0",
    ),
}


@dataclass(frozen=True)
class BuildInputs:
    arch: Arch
    epoch: int
    cache: Path  # ~/.cache/powernode/build
    cmdline: str | None = None


Artifacts = dict[str, bytes]
Variant = Callable[[BuildInputs], tuple[Artifacts, dict[str, object]]]


def _kernel_initrd(inputs: BuildInputs) -> tuple[Artifacts, dict[str, object]]:
    a, debs_dir = inputs.arch, inputs.cache / DEBS_DIR
    memo = inputs.cache / "image"
    kernel_name = newest_name(a.kernel_package, memo)
    names = [kernel_name, "busybox-static", "fsverity", "libfsverity0", "libssl3", "libc6"]
    kernel_deb, busybox, fsverity, *libs = fetch_all(names, a.name, debs_dir, memo)
    helpers = tuple((n, initramfs.compile_helper(src)) for n, src in initramfs.HELPERS.items())
    userland = initramfs.Userland(
        busybox=busybox,
        fsverity=fsverity,
        libs=tuple(libs),
        triplet=a.triplet,
        loader=a.loader,
        helpers=helpers,
    )
    req = initramfs.read_module_setup()
    kernel = extract(kernel_deb, tuple(req.kernel_modules), inputs.cache / "image")
    off = [o for o in a.config if kernel.option(o) not in ("y", "m")]
    if off:
        raise ConfigError(
            f"kernel {kernel.release}: {', '.join(off)} not enabled; the node's boot relies on them"
        )
    cmdline = inputs.cmdline or f"console={a.console} panic=-1 quiet"
    files = {
        "vmlinuz": kernel.image,
        # the same kernel uncompressed: QEMU boots its PVH entry ~2 s sooner under TCG
        "vmlinux": uncompressed_elf(kernel.image),
        "initramfs.cpio": initramfs.build(kernel, userland, req, inputs.epoch),
        "cmdline": (cmdline + "\n").encode(),
    }
    debs: list[Deb] = [kernel_deb, userland.busybox, userland.fsverity, *userland.libs]
    info: dict[str, object] = {
        "packages": [d.manifest() for d in debs],
        "kernel": {
            "release": kernel.release,
            "config": {o: kernel.option(o) for o in a.config},
            "modules": [m.name for m in kernel.modules],
        },
        "dracut_module": "90powernode",
        "helpers": {
            n: {
                "source_sha256": hashlib.sha256(initramfs.HELPERS[n].read_bytes()).hexdigest(),
                "sha256": hashlib.sha256(data).hexdigest(),
                "gcc_flags": list(initramfs.GCC_FLAGS),
            }
            for n, data in helpers
        },
        "cmdline": cmdline,
    }
    return files, info


VARIANTS: dict[str, Variant] = {"kernel-initrd": _kernel_initrd}


def _tools() -> dict[str, str]:
    return {
        "powernode": __version__,
        "python": platform.python_version(),
        "apt": tool_version(["apt-get", "--version"]),
        "dpkg-deb": tool_version(["dpkg-deb", "--version"]),
        "depmod": tool_version(["depmod", "--version"]),
        "zstd": tool_version(["zstd", "--version"]),
        "gcc": tool_version(["gcc", "--version"]),
    }


def default_out(variant: str, arch: str) -> Path:
    return Path("images") / variant / arch


def build(
    variant: str,
    arch: str,
    out: Path | None = None,
    *,
    cache: Path | None = None,
    epoch: int | None = None,
) -> Path:
    """Build ``variant`` for ``arch`` into ``out`` (default ``images/<variant>/<arch>``)."""
    if variant not in VARIANTS:
        raise ConfigError(f"variant {variant!r}: known variants are {', '.join(VARIANTS)}")
    if arch not in ARCHES:
        raise ConfigError(f"architecture {arch!r}: known architectures are {', '.join(ARCHES)}")
    if epoch is None:
        env = os.environ.get("SOURCE_DATE_EPOCH", "")
        if env and not env.isdigit():
            raise ConfigError(f"SOURCE_DATE_EPOCH={env!r}: expected seconds since 1970")
        epoch = int(env) if env else DEFAULT_EPOCH
    out = out or default_out(variant, arch)
    inputs = BuildInputs(ARCHES[arch], epoch, cache or default_cache_dir())
    files, info = VARIANTS[variant](inputs)
    manifest = {
        "variant": variant,
        "arch": arch,
        "source_date_epoch": epoch,
        **info,
        "tools": _tools(),
        "files": {
            n: {
                "sha256": hashlib.sha256(d).hexdigest(),
                "size": len(d),
                "fsverity": fsverity_digest(d).hex(),
            }
            for n, d in sorted(files.items())
        },
    }
    files["build-manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    names = sorted(files)
    files["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in names
    ).encode()
    files["FSVERITY-DIGESTS"] = "".join(
        f"sha256:{fsverity_digest(files[n]).hex()} {n}\n" for n in names
    ).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    tmp.chmod(0o755)
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.utime(tmp / name, (epoch, epoch))
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
