"""The module toolchain: read module repos, filter, build, sign and publish artifacts."""
