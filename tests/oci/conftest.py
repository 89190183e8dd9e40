"""Registry fixtures for tests/oci (defined in registry_fixture.py for reuse)."""

from tests.oci.registry_fixture import oci_registry, oci_registry_basic

__all__ = ["oci_registry", "oci_registry_basic"]
