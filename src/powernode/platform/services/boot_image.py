"""A kernel-initrd image directory: ``kernel``, ``initrd`` and the default ``cmdline``.

What ``powernode image build --variant kernel-initrd`` writes, and what the
qemu provider boots and netboot serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from powernode.platform.problems import ProviderError

IMAGE_FILES = ("kernel", "initrd")


@dataclass(frozen=True)
class BootImage:
    kernel: Path
    initrd: Path
    cmdline: str


def load(directory: Path) -> BootImage:
    """The image in ``directory``; ProviderError naming what is missing."""
    missing = [n for n in IMAGE_FILES if not (directory / n).is_file()]
    if missing:
        raise ProviderError(
            f"image directory {directory} lacks {', '.join(missing)}: it must hold kernel, "
            "initrd and cmdline (build one with: powernode image build --variant kernel-initrd)",
            image_dir=str(directory),
        )
    cmdline_file = directory / "cmdline"
    cmdline = cmdline_file.read_text().strip() if cmdline_file.is_file() else ""
    return BootImage(directory / "kernel", directory / "initrd", cmdline)


def instance_cmdline(image: BootImage, instance_id: str, platform_url: str) -> str:
    """The image's cmdline plus the instance's identity and the platform's URL."""
    extra = (f"powernode.id={instance_id}", f"powernode.platform={platform_url}")
    return " ".join(x for x in (image.cmdline, *extra) if x)
