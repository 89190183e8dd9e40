"""A kernel-initrd image directory, as ``powernode image build --variant kernel-initrd`` writes it.

``vmlinux`` (the PVH ELF), ``vmlinuz`` (the bzImage), ``initramfs.cpio`` and
``cmdline`` (names in ``powernode.image.contract``). The qemu provider boots
``vmlinux`` when it is there (QEMU's ``-kernel`` enters it through PVH, about
2 s sooner under TCG: shared/notes/FACTS.md), else ``vmlinuz``; netboot serves
``vmlinuz`` (iPXE boots a bzImage, not an ELF). A directory holding the older
``kernel`` and ``initrd`` names still works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from powernode.image.contract import CMDLINE, INITRAMFS, KERNEL_BZIMAGE, KERNEL_PVH
from powernode.platform.problems import ProviderError

# In the order they are preferred.
QEMU_KERNELS = (KERNEL_PVH, KERNEL_BZIMAGE, "kernel")
NETBOOT_KERNELS = (KERNEL_BZIMAGE, "kernel")
INITRDS = (INITRAMFS, "initrd")


@dataclass(frozen=True)
class BootImage:
    kernel: Path  # what QEMU's -kernel boots
    initrd: Path
    cmdline: str
    netboot_kernel: Path | None  # a bzImage, when the directory has one


def _first(directory: Path, names: tuple[str, ...]) -> Path | None:
    return next((directory / n for n in names if (directory / n).is_file()), None)


def load(directory: Path) -> BootImage:
    """The image in ``directory``; ProviderError naming what is missing."""
    kernel = _first(directory, QEMU_KERNELS)
    initrd = _first(directory, INITRDS)
    missing = [
        " or ".join(names)
        for found, names in ((kernel, QEMU_KERNELS), (initrd, INITRDS))
        if found is None
    ]
    if kernel is None or initrd is None:
        raise ProviderError(
            f"image directory {directory} lacks {'; '.join(missing)}: it must hold a kernel "
            f"({KERNEL_PVH} and/or {KERNEL_BZIMAGE}), {INITRAMFS} and {CMDLINE} "
            "(build one with: powernode image build --arch amd64 --variant kernel-initrd)",
            image_dir=str(directory),
        )
    cmdline_file = directory / CMDLINE
    cmdline = cmdline_file.read_text().strip() if cmdline_file.is_file() else ""
    return BootImage(kernel, initrd, cmdline, _first(directory, NETBOOT_KERNELS))


def instance_cmdline(image: BootImage, instance_id: str, platform_url: str) -> str:
    """The image's cmdline plus the instance's identity and the platform's URL."""
    extra = (f"powernode.id={instance_id}", f"powernode.platform={platform_url}")
    return " ".join(x for x in (image.cmdline, *extra) if x)
