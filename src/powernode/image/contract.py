"""Names the boot image, the initramfs and the platform's provider must agree on.

One place for each: the persist filesystem's label (``bootlayout`` renders it
into 90powernode's ``powernode-layout.sh``; the qemu provider formats each
instance's persist disk with it), the fw-cfg item and virtio-9p tag that carry
the seed bundle, and the files of a kernel-initrd image directory
(``powernode image build --variant kernel-initrd`` writes them, the provider
boots them, netboot serves them).
"""

from __future__ import annotations

# ext4 labels hold 16 bytes: a longer one is silently truncated by mkfs.ext4 and
# then no longer matches what the initramfs looks for.
PERSIST_LABEL = "pn-persist"
LABEL_MAX = 16
assert len(PERSIST_LABEL.encode()) <= LABEL_MAX

FWCFG_SEED_ITEM = "opt/com.powernode/seed.tar"
P9_SEED_TAG = "powernode-seed"

# A kernel-initrd directory, as image build writes it.
KERNEL_PVH = "vmlinux"  # the uncompressed ELF: QEMU's -kernel starts its PVH entry (TCG: faster)
KERNEL_BZIMAGE = "vmlinuz"  # what firmware and iPXE boot
INITRAMFS = "initramfs.cpio"
CMDLINE = "cmdline"
