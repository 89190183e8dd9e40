#!/bin/sh
# 90powernode: the initramfs stages that compose the node's root from verified
# modules (seed 002's boot pipeline). POSIX sh, busybox-compatible, no Python.
#
#   powernode-stage.sh identity   claim the identity (the agent's cascade), say which source won
#   powernode-stage.sh compose    find the module set, check every image, mount the union on $NEWROOT
#   powernode-stage.sh seed       bind the seed bundle into the composed root
#   powernode-stage.sh plan SET   print the overlay options for SET (no mounts; tests)
#
# Constants (paths, names, options) come from powernode-layout.sh, rendered
# from the same Python source the agent's union.restack uses.
set -eu

PN_LIB_DIR=${PN_LIB_DIR:-/usr/lib/powernode/initrd}
. "$PN_LIB_DIR/powernode-layout.sh"

NEWROOT=${NEWROOT:-/sysroot}
PN_CMDLINE_FILE=${PN_CMDLINE_FILE:-/proc/cmdline}
PN_SYS=${PN_SYS:-/sys}

say() { echo "powernode: $*" >&2; [ -w /dev/kmsg ] && echo "powernode: $*" >/dev/kmsg 2>/dev/null || true; }
stop() {
    say "boot stopped: $*"
    exit 1
}

is_mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }

cmdline_arg() { # the value of NAME= on the kernel command line, or nothing
    for word in $(cat "$PN_CMDLINE_FILE" 2>/dev/null || true); do
        case "$word" in "$1="*) echo "${word#*=}" ;; esac
    done | tail -n 1
}

valid_uuid() { # the agent's rules: canonical form, lowercase, no firmware placeholders
    v=$(echo "$1" | tr 'A-F' 'a-f')
    case "$v" in
    00000000-0000-0000-0000-000000000000 | ffffffff-ffff-ffff-ffff-ffffffffffff) return 1 ;;
    esac
    echo "$v" | grep -Eqx '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' || return 1
    echo "$v"
}

try_source() { # NAME: print the identity if source NAME has a valid one
    case "$1" in
    cmdline)
        v=$(cmdline_arg powernode.id)
        [ -n "$v" ] || { say "identity: cmdline: no powernode.id="; return 1; } ;;
    fwcfg)
        f="$PN_SYS/firmware/qemu_fw_cfg/by_name/$PN_FWCFG_ID_ITEM/raw"
        [ -r "$f" ] || { say "identity: fwcfg: no item $PN_FWCFG_ID_ITEM"; return 1; }
        v=$(tr -d '\000\n ' <"$f") ;;
    dmi)
        f="$PN_SYS/class/dmi/id/product_uuid"
        [ -r "$f" ] || { say "identity: dmi: no $f"; return 1; }
        v=$(tr -d '\000\n ' <"$f") ;;
    local)
        f="$PN_IDENTITY_FILE"
        [ -r "$f" ] || { say "identity: local: no $f"; return 1; }
        v=$(sed -n 's/^[[:space:]]*instance_id[[:space:]]*=[[:space:]]*//p' "$f" | tr -d ' \r')
        [ -n "$v" ] || v=$(grep -v '^[[:space:]]*#' "$f" | grep -v '^[[:space:]]*$' | head -n 1) ;;
    *)
        # cloud metadata needs the network, which the initramfs does not bring up
        say "identity: $1: skipped (cloud metadata is read by the agent, after switch_root)"
        return 1 ;;
    esac
    if ! valid_uuid "$v" >/dev/null; then
        say "identity: $1: '$v' is not a valid instance UUID"
        return 1
    fi
    valid_uuid "$v"
}

stage_identity() {
    mkdir -p "$PN_CLAIM_DIR"
    for source in $PN_IDENTITY_SOURCES; do
        if id=$(try_source "$source"); then
            printf 'instance_id=%s\nsource=%s\n' "$id" "$source" >"$PN_CLAIM_DIR/identity"
            say "identity $id from $source"
            return 0
        fi
    done
    say "identity: no source gave one; the agent enrolls without a claimed identity"
    printf 'instance_id=\nsource=none\n' >"$PN_CLAIM_DIR/identity"
}

# --- the module set ---------------------------------------------------------------

mount_persist() {
    is_mounted "$PN_PERSIST_MNT" && return 0
    dev=$(cmdline_arg powernode.persist)
    [ -n "$dev" ] || dev=$(findfs "LABEL=$PN_PERSIST_LABEL" 2>/dev/null || true)
    if [ -z "$dev" ]; then
        say "persist: no partition labelled $PN_PERSIST_LABEL"
        return 1
    fi
    mkdir -p "$PN_PERSIST_MNT"
    mount -t ext4 -o rw,nodev "$dev" "$PN_PERSIST_MNT" || { say "persist: cannot mount $dev"; return 1; }
    say "persist: $dev on $PN_PERSIST_MNT"
}

find_seed() { # the seed bundle: fw-cfg (a tar, unpacked) and/or virtio-9p (mounted read-only)
    # The provider hands the small secret part (seed.json, token, CA) over fw-cfg and the
    # module set with its store over virtio-9p (docs/decisions.md); either may carry both.
    # SEED_SET_DIR: the one holding modules.set (and store/), fw-cfg's first.
    seed="$PN_RUN_DIR/seed" found=1 SEED_SET_DIR=""
    f="$PN_SYS/firmware/qemu_fw_cfg/by_name/$PN_FWCFG_SEED_ITEM/raw"
    if [ -r "$f" ]; then
        mkdir -p "$seed"
        tar -x -f "$f" -C "$seed" || stop "seed bundle over fw-cfg ($PN_FWCFG_SEED_ITEM): not a tar archive"
        found=0
    fi
    if grep -qs "^$PN_P9_TAG\$" "$PN_SYS"/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag 2>/dev/null \
        || grep -qs "$PN_P9_TAG" "$PN_SYS"/bus/virtio/devices/*/mount_tag 2>/dev/null; then
        p9="$seed"
        [ "$found" = 0 ] && p9="$PN_RUN_DIR/seed-p9"
        mkdir -p "$p9"
        mount -t 9p -o trans=virtio,version=9p2000.L,ro "$PN_P9_TAG" "$p9" \
            || stop "seed bundle over virtio-9p ($PN_P9_TAG): cannot mount"
        found=0
    fi
    if [ -f "$seed/modules.set" ]; then
        SEED_SET_DIR=$seed
    elif [ -f "$PN_RUN_DIR/seed-p9/modules.set" ]; then
        SEED_SET_DIR="$PN_RUN_DIR/seed-p9"
    fi
    if [ -n "$SEED_SET_DIR" ]; then
        how="virtio-9p $PN_P9_TAG"
        [ "$SEED_SET_DIR" = "$seed" ] && [ -r "$f" ] && how="fw-cfg $PN_FWCFG_SEED_ITEM"
        say "module set: seed bundle over $how"
    fi
    return $found
}

import_seed() { # the seed's store/ into the persist store: objects and images by name
    src="$SEED_SET_DIR/store"
    [ -d "$src" ] || return 0
    mkdir -p "$PN_IMAGES_DIR" "$PN_OBJECTS_DIR"
    # what the store holds is kept (named by digest, and read-only once verity is on);
    # images are checked and objects verified by the kernel before anything is read
    n=0
    for sub in images objects; do
        [ -d "$src/$sub" ] || continue
        case "$sub" in images) dest=$PN_IMAGES_DIR ;; *) dest=$PN_OBJECTS_DIR ;; esac
        for rel in $(cd "$src/$sub" && find . -type f ! -name '.*' | sort); do
            [ -e "$dest/$rel" ] && continue
            # the store changes: the next walk must see every file (verity_kept)
            [ "$n" -gt 0 ] || rm -f "$PN_VERITY_STAMP"
            mkdir -p "$(dirname "$dest/$rel")"
            cp "$src/$sub/$rel" "$dest/$rel.partial"
            mv "$dest/$rel.partial" "$dest/$rel"
            n=$((n + 1))
        done
    done
    say "seed: $n file(s) imported into the store"
    sync
}

verity_supported() { # FS_IOC_MEASURE_VERITY on the store: ENODATA or success = supported
    out=$(fsverity measure "$PN_OBJECTS_DIR" 2>&1 || true)
    case "$out" in *"not supported"* | *"Inappropriate ioctl"* | *"Operation not supported"*) return 1 ;; esac
    return 0
}

# The stamp of the last complete walk: the set composed then (a copy) and, in
# $PN_VERITY_STAMP.count, how many files the walk found. Only a cache of work done:
# the union is mounted verity=require, so an object without fs-verity (a file put
# into the store behind the stamp's back) reads as EIO whatever the stamp says. The
# agent's object store enables verity on what it writes (verity/composefs/objects.py).
PN_VERITY_STAMP="$(dirname "$PN_BOOT_SET")/verity.set"

verity_kept() { # SET: a complete walk enabled verity on this store for this same set
    [ -f "$PN_VERITY_STAMP" ] && [ -f "$PN_VERITY_STAMP.count" ] && cmp -s "$1" "$PN_VERITY_STAMP"
}

enable_verity() { # SET: FS_IOC_ENABLE_VERITY on every object and image that lacks it
    mkdir -p "$PN_OBJECTS_DIR" "$PN_IMAGES_DIR"
    # A reboot into the set the last walk was made for, nothing imported since (the
    # import removes the stamp; the agent writes a new boot set when it adds modules):
    # every object already has verity, and walking ~7,000 of them costs seconds under TCG.
    if verity_kept "$1"; then
        say "verity: enabled 0, already $(cat "$PN_VERITY_STAMP.count") (kept: enabled by an earlier boot for this set, nothing imported since)"
        return 0
    fi
    rm -f "$PN_VERITY_STAMP"
    if command -v pn-verity-enable >/dev/null 2>&1; then
        # one process for the whole store (powernode's initramfs builds it: one exec per
        # object costs minutes under TCG); it counts what already had verity
        out=$(pn-verity-enable "$PN_OBJECTS_DIR" "$PN_IMAGES_DIR" 2>&1) || { say "verity: $out"; return 1; }
        say "verity: $out"
        # "enabled N, already M": the stamp records the store's total
        total=$(echo "$out" | sed -n 's/^enabled \([0-9]*\), already \([0-9]*\)$/\1 + \2/p')
        [ -z "$total" ] || stamp_verity "$1" $((total))
        return 0
    fi
    n=0 already=0
    for f in $(find "$PN_OBJECTS_DIR" "$PN_IMAGES_DIR" -type f ! -name '.*' | sort); do
        if ! err=$(fsverity enable "$f" 2>&1); then
            case "$err" in *"File exists"*) already=$((already + 1)); continue ;; esac
            say "verity: cannot enable on $f: $err"
            return 1
        fi
        n=$((n + 1))
    done
    say "verity: enabled $n, already $already"
    stamp_verity "$1" $((n + already))
}

stamp_verity() { # SET COUNT: record a complete walk (best effort: without it the next boot walks)
    { mkdir -p "$(dirname "$PN_VERITY_STAMP")" && echo "$2" >"$PN_VERITY_STAMP.count" && cp "$1" "$PN_VERITY_STAMP.tmp" \
        && mv "$PN_VERITY_STAMP.tmp" "$PN_VERITY_STAMP"; } 2>/dev/null || rm -f "$PN_VERITY_STAMP"
}

verity_option() {
    want=$(cmdline_arg powernode.verity)
    [ -n "$want" ] || want=$PN_VERITY_DEFAULT
    case "$want" in
    off | on | require) echo "$want" ;;
    auto)
        if verity_supported; then echo require; else echo off; fi ;;
    *) stop "powernode.verity=$want: use auto, off, on or require" ;;
    esac
}

check_set() { # SET: every image present with its digest; prints "refused ..." lines
    bad=0
    while read -r prio name hex; do
        case "$prio" in '#'* | '') continue ;; esac
        img="$PN_IMAGES_DIR/$hex.cfs"
        if [ ! -f "$img" ]; then
            say "refused module $name: image $hex.cfs is not in the store"
            bad=1
            continue
        fi
        # With fs-verity on the image the kernel holds its digest (FS_IOC_MEASURE_VERITY)
        # and checks every read against it: no need to hash it here. Otherwise (verity
        # off, or enabled with other parameters) hash it in userspace.
        measured=$(fsverity measure "$img" 2>/dev/null || true)
        [ "$measured" = "sha256:$hex $img" ] && continue
        got=$(fsverity digest --compact --hash-alg=sha256 "$img" 2>/dev/null || echo unreadable)
        if [ "$got" != "$hex" ]; then
            say "refused module $name: image digest sha256:$got, the set says sha256:$hex"
            bad=1
        fi
    done <"$1"
    return $bad
}

ordered() { # SET: "prio name hex" lines, highest priority first, then by name (restack's order)
    grep -v '^#' "$1" | grep -v '^[[:space:]]*$' | LC_ALL=C sort -k1,1nr -k2,2
}

overlay_options() { # SET VERITY UPPERBASE: the overlay data string union.restack mounts
    lowers=""
    for name in $(ordered "$1" | cut -d ' ' -f 2); do
        lowers="${lowers:+$lowers:}$PN_RUN_DIR/gen-$PN_GENERATION/layers/$name"
    done
    opts="lowerdir=$lowers::$PN_OBJECTS_DIR,$PN_OVERLAY_FIXED"
    [ "$2" = off ] || opts="$opts,verity=$2"
    if [ -n "$3" ]; then
        opts="$opts,upperdir=$3/upper,workdir=$3/work-$PN_GENERATION"
    fi
    echo "$opts"
}

undo_mounts() {
    for m in $(grep " $PN_RUN_DIR/gen-$PN_GENERATION/" /proc/mounts | cut -d ' ' -f 2 | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    is_mounted "$NEWROOT" && umount -l "$NEWROOT" 2>/dev/null || true
}

mount_set() { # SET VERITY: layers, then the union on $NEWROOT; all or nothing
    gen="$PN_RUN_DIR/gen-$PN_GENERATION"
    upperbase="$PN_RUN_DIR/upper"
    [ "$(cmdline_arg powernode.upper)" = persist ] && upperbase="$PN_PERSIST_UPPER"
    mkdir -p "$upperbase/upper" "$NEWROOT"
    rm -rf "$upperbase/work-$PN_GENERATION"
    mkdir -m 700 "$upperbase/work-$PN_GENERATION"
    for name_hex in $(ordered "$1" | cut -d ' ' -f 2,3 | tr ' ' '/'); do
        name=${name_hex%/*}
        mkdir -p "$gen/layers/$name"
        if ! mount -t erofs -o ro,nodev "$PN_IMAGES_DIR/${name_hex#*/}.cfs" "$gen/layers/$name"; then
            undo_mounts
            return 1
        fi
    done
    opts=$(overlay_options "$1" "$2" "$upperbase")
    if ! mount -t overlay -o "nodev,$opts" "$PN_UNION_SOURCE" "$NEWROOT"; then
        undo_mounts
        return 1
    fi
}

stage_compose() {
    persist=yes
    mount_persist || persist=no
    # the agent's run tmpfs (union.ensure_run): private, empty every boot, on the persist tree
    mkdir -p "$PN_RUN_DIR" "$PN_CLAIM_DIR"
    if ! is_mounted "$PN_RUN_DIR"; then
        mount -t tmpfs -o "nodev,mode=700,size=$PN_TMPFS_SIZE" tmpfs "$PN_RUN_DIR"
        mount --make-private "$PN_RUN_DIR"
    fi
    candidate="" last_good="" seed_set=""
    # a seed's set is applied once: the boot after it (the same fw-cfg bundle is still
    # there) takes the last good set the agent keeps current, unless the seed's set changed
    applied="$(dirname "$PN_BOOT_SET")/seed.set"
    if find_seed && [ -n "$SEED_SET_DIR" ]; then
        [ "$persist" = yes ] || stop "a seed bundle needs the persist partition ($PN_PERSIST_LABEL) for its store"
        import_seed
        mkdir -p "$PN_RUN_DIR/seed"
        [ -f "$PN_RUN_DIR/seed/modules.set" ] || cp "$SEED_SET_DIR/modules.set" "$PN_RUN_DIR/seed/modules.set"
        seed_set="$PN_RUN_DIR/seed/modules.set"
        if [ -f "$PN_BOOT_SET" ] && [ -f "$applied" ] && cmp -s "$seed_set" "$applied"; then
            say "module set: the seed bundle's set was applied on an earlier boot"
        else
            candidate=$seed_set
        fi
        if [ "$SEED_SET_DIR" != "$PN_RUN_DIR/seed" ]; then umount "$SEED_SET_DIR" 2>/dev/null || true; fi
    fi
    if [ "$persist" = yes ] && [ -f "$PN_BOOT_SET" ]; then
        last_good="$PN_BOOT_SET"
        [ -n "$candidate" ] || { candidate="$last_good"; say "module set: the persist store's last good set"; }
    fi
    if [ -z "$candidate" ]; then
        stop "no module set: no seed bundle (fw-cfg $PN_FWCFG_SEED_ITEM, virtio-9p $PN_P9_TAG) and no last good set in $PN_BOOT_SET; the platform is asked by the agent, which lives in a module. Nothing was mounted."
    fi
    verity=$(verity_option)
    if [ "$verity" = require ]; then enable_verity "$candidate" || stop "verity=require, but verity could not be enabled on the store"; fi
    if ! check_set "$candidate"; then
        if [ -n "$last_good" ] && [ "$candidate" != "$last_good" ] && check_set "$last_good"; then
            say "module set refused; booting the last good set from $PN_BOOT_SET"
            candidate="$last_good"
        else
            stop "module set refused and no last good set passes its checks; nothing was mounted"
        fi
    fi
    mount_set "$candidate" "$verity" || stop "composing the root failed; every mount was undone"
    if [ "$candidate" != "$PN_BOOT_SET" ]; then
        mkdir -p "$(dirname "$PN_BOOT_SET")"
        cp "$candidate" "$PN_BOOT_SET.tmp" && sync && mv "$PN_BOOT_SET.tmp" "$PN_BOOT_SET" && sync
    fi
    if [ "$candidate" = "$seed_set" ]; then
        cp "$seed_set" "$applied.tmp" && mv "$applied.tmp" "$applied" && sync
    fi
    cp "$candidate" "$PN_CLAIM_DIR/boot.set"
    say "root composed on $NEWROOT: $(ordered "$candidate" | cut -d ' ' -f 2 | tr '\n' ' ')(verity=$verity)"
}

stage_seed() { # bind the seed bundle and the claimed identity where the agent reads them
    [ -d "$PN_RUN_DIR/seed" ] || return 0
    is_mounted "$NEWROOT" || stop "seed: no composed root on $NEWROOT"
    target="$NEWROOT$PN_SEED_TARGET"
    mkdir -p "$target"
    mount --bind "$PN_RUN_DIR/seed" "$target"
    say "seed bundle bound at $PN_SEED_TARGET"
}

case "${1:-}" in
identity) stage_identity ;;
compose) stage_compose ;;
seed) stage_seed ;;
plan)
    [ $# -ge 3 ] || stop "usage: $0 plan SET VERITY [UPPERBASE]"
    overlay_options "$2" "$3" "${4:-}" ;;
*) echo "usage: $0 identity|compose|seed|plan SET VERITY [UPPERBASE]" >&2; exit 2 ;;
esac
