"""Supply-chain evidence: DSSE, in-toto/SLSA provenance, OpenVEX, OSV matching, policies.

Pure library (bytes and dicts in, dataclasses out); the platform stores what it
returns (platform/services/evidence.py) and the OCI client moves it
(oci/referrers.py). See docs/supply-chain.md.
"""
