"""Small builders shared by the OCI tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

from powernode.oci.digest import Digest
from powernode.oci.mediatypes import OCI_MANIFEST
from powernode.oci.registry import Registry

ARTIFACT_TYPE = "application/vnd.powernode.test.v1"
CONFIG_TYPE = "application/vnd.powernode.test.config.v1+json"
LAYER_TYPE = "application/vnd.powernode.test.layer.v1"


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes unique per (size, seed)."""
    out = bytearray()
    block = Digest.of_bytes(f"{seed}:{size}".encode()).hex.encode()
    while len(out) < size:
        block = Digest.of_bytes(block).hex.encode()
        out += bytes.fromhex(block.decode())
    return bytes(out[:size])


def write_file(path: Path, data: bytes) -> tuple[Path, Digest]:
    path.write_bytes(data)
    return path, Digest.of_bytes(data)


def manifest_for(config: bytes, layers: list[bytes]) -> bytes:
    def desc(media_type: str, data: bytes) -> dict[str, object]:
        return {"mediaType": media_type, "digest": str(Digest.of_bytes(data)), "size": len(data)}

    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": desc(CONFIG_TYPE, config),
        "layers": [desc(LAYER_TYPE, layer) for layer in layers],
    }
    return json.dumps(doc, sort_keys=True).encode()


def push_artifact(
    reg: Registry, tmp: Path, repository: str, layers: list[bytes], config: bytes = b"{}"
) -> tuple[bytes, Digest]:
    """Push config + layers from files, return (manifest bytes, manifest digest) (untagged)."""
    for i, data in enumerate([config, *layers]):
        path, digest = write_file(tmp / f"push-{os.getpid()}-{i}", data)
        reg.push_blob(repository, path, digest, len(data))
    manifest = manifest_for(config, layers)
    return manifest, Digest.of_bytes(manifest)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
