"""Real EROFS and overlayfs mounts: composefs images stacked into a union."""
