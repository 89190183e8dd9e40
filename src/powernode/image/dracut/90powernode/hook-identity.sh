#!/bin/sh
# dracut cmdline hook (sourced): claim the node's identity in a strict-mode child shell.
/bin/sh /usr/lib/powernode/initrd/powernode-stage.sh identity || die "identity stage failed"
