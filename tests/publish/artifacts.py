"""Make artifact directories (docs/artifact.md) for tests, with the composefs writer.

Stands in for ``powernode module build`` (mmdebstrap, SBOM…): the tree is
written from a dict, the image and object store by ``build_image``, and
module.json / sbom.cdx.json / lists are minimal but follow the contract.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from powernode.publish.format import canonical_json
from powernode.verity.composefs.scan import TreePolicy
from powernode.verity.composefs.writer import build_image

EPOCH = 1_700_000_000


def object_bytes(seed: str, size: int) -> bytes:
    """Deterministic, distinct, incompressible-ish bytes (> 64 so never inline)."""
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 32
    return bytes(out[:size])


def make_artifact(
    out: Path,
    files: Mapping[str, bytes],
    *,
    name: str = "demo",
    version: str = "1.0.0",
    epoch: int = EPOCH,
) -> Path:
    """Write the artifact of ``files`` (path → content) to ``out``; returns ``out``."""
    src = out.with_name(out.name + ".src")
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    src.mkdir(parents=True, exist_ok=True)
    for p in [src, *src.rglob("*")]:
        os.utime(p, (epoch, epoch), follow_symlinks=False)
    out.mkdir(parents=True)
    result = build_image(
        src,
        out / "image.cfs",
        digest_store=out / "objects",
        policy=TreePolicy(source_date_epoch=epoch),
    )
    manifest = {"name": name, "version": version, "schema_version": 1}
    config = {
        "artifact_version": 1,
        "name": name,
        "version": version,
        "manifest": manifest,
        "composefs_digest": f"sha256:{result.digest}",
        "files": len(files),
        "objects": len(result.objects),
        "object_bytes": sum(o.size for o in result.objects),
        "source_date_epoch": epoch,
        "packages": [],
    }
    (out / "module.json").write_bytes(canonical_json(config))
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1, "components": []}
    (out / "sbom.cdx.json").write_text(json.dumps(sbom, sort_keys=True))
    (out / "file-list.txt").write_text("".join(f"/{p}\n" for p in sorted(files)))
    (out / "package-list.txt").write_text("")
    (out / "manifest.json").write_bytes(canonical_json(manifest))
    return out


def small_files(tag: str = "a", count: int = 6, size: int = 5000) -> dict[str, bytes]:
    """A tree of ``count`` distinct objects plus one inline file."""
    files = {f"usr/share/{tag}/f{i}.bin": object_bytes(f"{tag}{i}", size + i) for i in range(count)}
    files["etc/inline.conf"] = b"tiny\n"
    return files


def store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
