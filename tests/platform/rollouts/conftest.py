"""The node API platform fixtures (tests/platform/nodeapi/conftest.py), shared here."""

from tests.platform.nodeapi.conftest import clock, node_platform

__all__ = ["clock", "node_platform"]
