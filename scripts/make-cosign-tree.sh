#!/bin/bash
# A Debian trixie tree with cosign, for tests/supply/test_cosign_interop.py.
# cosign is not packaged for Debian 12 and trixie's build needs glibc 2.38, so the
# test runs it with chroot(8) in this tree (~560 MB; ~3 min). Needs root and
# mmdebstrap (scripts/install-system-deps.sh). Usage: make-cosign-tree.sh [ROOT]
set -euo pipefail
root=${1:-${POWERNODE_COSIGN_ROOT:-/var/tmp/supply-cosign/root}}
if [[ -x "$root/usr/bin/cosign" ]]; then
    echo "cosign tree present: $root"
    exit 0
fi
mkdir -p "$(dirname "$root")"
mmdebstrap --variant=apt --include=cosign,ca-certificates trixie "$root" \
    http://deb.debian.org/debian
chroot "$root" cosign version | grep -i gitversion || true
echo "cosign tree made: $root (export POWERNODE_COSIGN_ROOT=$root)"
