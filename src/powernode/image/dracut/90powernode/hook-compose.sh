#!/bin/sh
# dracut mount hook (sourced): compose the root from verified modules on $NEWROOT.
NEWROOT="$NEWROOT" /bin/sh /usr/lib/powernode/initrd/powernode-stage.sh compose || die "the root was not composed (see the messages above)"
