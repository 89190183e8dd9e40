#!/usr/bin/env bash
# Installs the Debian packages a set needs, only those missing.
#
#   scripts/install-system-deps.sh demo   what `make demo` runs
#   scripts/install-system-deps.sh test   what `make test` runs and compares against
#
# Idempotent and quiet when everything is present; needs root to install (not root:
# it prints the apt-get line to run and exits 0, so the tests that need a tool skip
# and say why).
#
# Daemons: a package such as postgresql or docker-registry starts and enables its
# service when installed. The tests start their own instances on free ports, so
# while this script installs, a policy-rc.d refuses every service start (Debian
# policy 9.3.3: invoke-rc.d asks /usr/sbin/policy-rc.d; 101 = action forbidden),
# and on a systemd host the units of the packages it installed are disabled and
# stopped afterwards. Services that were there before are left as they were found.
#
# apt's lock: another apt or dpkg (unattended-upgrades, a second `make`) may hold
# it; apt-get waits for it (DPkg::Lock::Timeout) up to APT_LOCK_WAIT seconds,
# saying so, instead of failing at once.
set -euo pipefail

set_name=${1:-test}
case "$set_name" in
demo)
    # The demo runs on SQLite and an OCI layout directory with its own composefs
    # writer and the kernel's EROFS/overlayfs: the mount and losetup it uses are
    # util-linux (essential). mmdebstrap builds modules from their packages.
    pkgs=(mmdebstrap)
    ;;
test)
    # qemu-system-x86, ipxe-qemu, busybox-static, kmod (depmod), e2fsprogs (mkfs.ext4 -O
    # verity), cpio, zstd (the kernel's payload): the kernel-initrd image, the QEMU
    # provider and netboot, booted under QEMU (issue 15); gcc + libc6-dev build the
    # initramfs's static pn-verity-enable (src/powernode/image/helpers/). fdisk (sfdisk):
    # powernode-agent volume-setup, tested on loop devices. haproxy: the scaled
    # deployment (powernode fleet cluster, tests/fleet). puppet (~42 MB with its ruby,
    # no recommends): powernode-agent puppet apply.
    pkgs=(mmdebstrap fsverity erofs-utils attr docker-registry apache2-utils skopeo postgresql
        chromium qemu-system-x86 ipxe-qemu busybox-static kmod e2fsprogs cpio zstd fdisk
        haproxy puppet gcc libc6-dev)
    ;;
*)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 0
fi

wait_s=${APT_LOCK_WAIT:-300}
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o "DPkg::Lock::Timeout=$wait_s" -o Acquire::Retries=3)

# Tell the user when apt is busy rather than sitting silent.
if command -v fuser >/dev/null 2>&1 &&
    fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; then
    echo "another apt or dpkg holds its lock: waiting up to ${wait_s}s for it (APT_LOCK_WAIT)"
fi

units_before=$(systemctl list-unit-files --type=service --no-legend 2>/dev/null | awk '{print $1}' | sort || true)

policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by powernode install-system-deps.sh while it installs\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
# (an `if`, not `&&`: the trap's last status would become the script's exit status)
cleanup() { if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "installing Debian packages: ${missing[*]}"
log=$(mktemp)
if ! { apt-get "${apt_opts[@]}" update -qq && apt-get "${apt_opts[@]}" install -y -qq \
    --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    echo "apt-get failed installing ${missing[*]}; its last lines:" >&2
    tail -n 20 "$log" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"

# A systemd host: disable and stop the services the packages just brought.
if [ -d /run/systemd/system ]; then
    units_after=$(systemctl list-unit-files --type=service --no-legend 2>/dev/null | awk '{print $1}' | sort || true)
    new_units=$(comm -13 <(echo "$units_before") <(echo "$units_after") | grep -v '@' || true)
    for u in $new_units; do
        systemctl disable --now "$u" >/dev/null 2>&1 || true
    done
fi
