#!/bin/sh
# dracut pre-pivot hook (sourced): bind the seed bundle into the composed root.
NEWROOT="$NEWROOT" /bin/sh /usr/lib/powernode/initrd/powernode-stage.sh seed || die "binding the seed bundle failed"
