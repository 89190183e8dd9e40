#!/bin/bash
# 90powernode: compose the root from verified composefs modules (dracut.modules(7)).
# Included only when asked for: dracut --add powernode (check returns 255).
# powernode's own initramfs builder reads this file too: the inst_* calls
# below are the one list of what goes into either initramfs.

check() {
    return 255
}

depends() {
    echo base
    return 0
}

installkernel() {
    # virtio_net: the composed root carries no kernel modules; the agent needs the NIC
    instmods crc32c_generic erofs overlay ext4 virtio_blk loop qemu_fw_cfg 9p 9pnet_virtio virtio_net
}

install() {
    inst_multiple sh cat cp mv rm mkdir sed grep sort tr cut head tail find tar sync \
        mount umount findfs switch_root fsverity dirname cmp
    inst_simple "$moddir/powernode-layout.sh" /usr/lib/powernode/initrd/powernode-layout.sh
    inst_script "$moddir/powernode-stage.sh" /usr/lib/powernode/initrd/powernode-stage.sh
    inst_hook cmdline 20 "$moddir/hook-identity.sh"
    inst_hook mount 50 "$moddir/hook-compose.sh"
    inst_hook pre-pivot 50 "$moddir/hook-seed.sh"
}
