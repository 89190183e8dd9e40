"""Registry fixtures for tests/publish (the real docker-registry, see tests/oci)."""

from tests.oci.registry_fixture import oci_registry

__all__ = ["oci_registry"]
