"""The agent's module layer: store, verify, mount, atomic restack, attach state, status."""
