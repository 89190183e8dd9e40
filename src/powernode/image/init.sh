#!/bin/sh
# /init of powernode's own initramfs: a tiny dracut-compatible runner.
# It mounts the API filesystems, loads the kernel modules listed in
# /etc/powernode/modules.load (dependencies first), sources the dracut hooks
# 90powernode installed (/lib/dracut/hooks/<stage>/<prio>-<name>.sh) in
# dracut's stage order, and switch_roots into the composed root's init.
# /init must never exit: on failure it says why and stops (powernode.on_stop=
# halt (default), poweroff or shell).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox --install -s /bin 2>/dev/null
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev 2>/dev/null || true
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
echo "powernode: initramfs /init on $(uname -r)" >/dev/console

arg() {
    for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}" ;; esac; done | tail -n 1
}

stopped() {
    echo "powernode: $*" >/dev/console
    case "$(arg powernode.on_stop)" in
    poweroff) sync; poweroff -f ;;
    shell) exec /bin/sh </dev/console >/dev/console 2>&1 ;;
    esac
    while :; do sleep 3600; done
}

die() { stopped "$*"; }

while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "/lib/modules/$(uname -r)/$ko" 2>/dev/null || echo "powernode: insmod $ko failed" >/dev/console
done </etc/powernode/modules.load

export NEWROOT=/sysroot
mkdir -p "$NEWROOT"
for stage in cmdline pre-udev pre-trigger initqueue pre-mount mount pre-pivot cleanup; do
    for hook in /lib/dracut/hooks/"$stage"/*.sh; do
        [ -f "$hook" ] || continue
        . "$hook" 2>/dev/console
    done
done

init=$(arg powernode.init)
if [ -z "$init" ]; then
    for c in /sbin/init /lib/systemd/systemd /usr/bin/powernode-agent; do
        if [ -x "$NEWROOT$c" ] || [ -L "$NEWROOT$c" ]; then init=$c; break; fi
    done
fi
[ -n "$init" ] || die "boot stopped: the composed root has no init (/sbin/init, systemd or powernode-agent)"
set --
[ "$init" = /usr/bin/powernode-agent ] && set -- boot
# read once: /proc itself is among what moves
mounted=$(cut -d ' ' -f 2 /proc/mounts)
for m in /persist /run /dev /proc /sys; do
    echo "$mounted" | grep -qx "$m" || continue
    mkdir -p "$NEWROOT$m" 2>/dev/null || true
    mount --move "$m" "$NEWROOT$m" || die "boot stopped: cannot move $m into the new root"
done
echo "powernode: switch_root to $init" >/dev/console
exec switch_root "$NEWROOT" "$init" "$@"
