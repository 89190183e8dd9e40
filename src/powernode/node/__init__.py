"""The node's contract with the platform and its on-disk layout.

Dependency-light on purpose: the agent imports it without the platform's
dependencies (standard library, :mod:`powernode.errors` and
:mod:`powernode.oci.digest` only). :mod:`.records` holds every node API
request and answer; :mod:`.layout` every path and mount option the node
uses on disk; :mod:`.store` the one class for the shared module store.
"""
