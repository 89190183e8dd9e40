"""Names the boot image, the initramfs and the platform's provider must agree on.

One place for each: the persist filesystem's label (``bootlayout`` renders it
into 90powernode's ``powernode-layout.sh``; the qemu provider formats each
instance's persist disk with it), the fw-cfg item and virtio-9p tag that carry
the seed bundle, and the files of a kernel-initrd image directory
(``powernode image build --variant kernel-initrd`` writes them, the provider
boots them, netboot serves them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

# ext4 labels hold 16 bytes: a longer one is silently truncated by mkfs.ext4 and
# then no longer matches what the initramfs looks for.
PERSIST_LABEL = "pn-persist"
LABEL_MAX = 16
assert len(PERSIST_LABEL.encode()) <= LABEL_MAX

# Where the node's module store lives inside the persist filesystem (bootlayout checks it
# against the agent's state directory): the provider writes a new instance's first set
# there when it formats the disk.
PERSIST_STORE = "var/lib/powernode"

FWCFG_SEED_ITEM = "opt/com.powernode/seed.tar"
P9_SEED_TAG = "powernode-seed"

# A kernel-initrd directory, as image build writes it.
KERNEL_PVH = "vmlinux"  # the uncompressed ELF: QEMU's -kernel starts its PVH entry (TCG: faster)
KERNEL_BZIMAGE = "vmlinuz"  # what firmware and iPXE boot
INITRAMFS = "initramfs.cpio"
CMDLINE = "cmdline"


SET_HEADER = "# powernode module set v1: <priority> <name> <composefs sha256 hex>"


class SetEntry(Protocol):
    """One module of a boot set: the agent's ModuleSpec and the platform's BootModule."""

    @property
    def name(self) -> str: ...
    @property
    def digest(self) -> str: ...  # sha256:<hex>
    @property
    def priority(self) -> int: ...


def render_module_set(specs: Iterable[SetEntry]) -> str:
    """``modules.set`` for ``specs``: the text the initramfs reads (a shell reads it: one
    module a line, ``<priority> <name> <composefs hex digest>``, highest first)."""
    rows = sorted(specs, key=lambda s: (-s.priority, s.name))
    body = "".join(f"{s.priority} {s.name} {s.digest.removeprefix('sha256:')}\n" for s in rows)
    return SET_HEADER + "\n" + body
