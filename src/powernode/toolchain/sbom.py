"""The artifact's SBOM: CycloneDX 1.5 JSON of the Debian packages and the files shipped.

Follows the CycloneDX 1.5 JSON schema (https://cyclonedx.org/docs/1.5/json/):
packages are ``library`` components named by a purl
(``pkg:deb/debian/<name>@<version>?arch=<arch>&distro=<suite>``, purl-spec
"deb" type; qualifiers sorted, the version percent-encoded so an epoch's
``:`` and a ``+`` survive), shipped files are ``file`` components with their
SHA-256. Everything is derived from the build's inputs: the serial number is
a UUIDv5 of the composefs digest and the timestamp is SOURCE_DATE_EPOCH, so
a rebuild writes the same bytes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from powernode import __version__
from powernode.publish.format import created_timestamp
from powernode.toolchain.build_tree import ShippedFile

_NAMESPACE = uuid.UUID("5b0f7c52-3c9e-4c41-9a57-2b6f1d9f0c11")  # powernode SBOM serials


@dataclass(frozen=True, order=True)
class Package:
    """One installed Debian package (from dpkg's status file)."""

    name: str
    version: str
    arch: str

    @property
    def pin(self) -> str:
        """``name=version``, the form of package-list.txt (and of ``apt install``).

        Just the name for a dry run's requested package whose version is not known yet.
        """
        return f"{self.name}={self.version}" if self.version else self.name


def purl(pkg: Package, distro: str | None) -> str:
    """The package URL of ``pkg`` (purl-spec, type ``deb``, namespace ``debian``)."""
    quals = [("arch", pkg.arch)] + ([("distro", distro)] if distro else [])
    tail = "&".join(f"{k}={quote(v, safe='.-_~')}" for k, v in sorted(quals))
    return (
        f"pkg:deb/debian/{quote(pkg.name, safe='.-_~+')}@{quote(pkg.version, safe='.-_~')}?{tail}"
    )


def make_sbom(
    *,
    name: str,
    version: str,
    composefs_digest: str,
    source_date_epoch: int,
    packages: Sequence[Package],
    files: Sequence[ShippedFile],
    distro: str | None,
) -> bytes:
    """The SBOM bytes: sorted, 2-space indented JSON with a trailing newline."""
    module_ref = f"module:{name}@{version}"
    components: list[dict[str, object]] = []
    for pkg in sorted(packages):
        ref = purl(pkg, distro)
        components.append(
            {
                "type": "library",
                "bom-ref": ref,
                "name": pkg.name,
                "version": pkg.version,
                "purl": ref,
            }
        )
    for f in sorted(files, key=lambda f: f.path):
        if f.kind != "file":
            continue
        comp: dict[str, object] = {"type": "file", "bom-ref": f"file:{f.path}", "name": f.path}
        if f.sha256 is not None:
            comp["hashes"] = [{"alg": "SHA-256", "content": f.sha256}]
        components.append(comp)
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(_NAMESPACE, composefs_digest)}",
        "version": 1,
        "metadata": {
            "timestamp": created_timestamp(source_date_epoch),
            "tools": {
                "components": [{"type": "application", "name": "powernode", "version": __version__}]
            },
            "component": {
                "type": "operating-system",
                "bom-ref": module_ref,
                "name": name,
                "version": version,
                "properties": [{"name": "powernode:composefs_digest", "value": composefs_digest}],
            },
        },
        "components": components,
        "dependencies": [{"ref": module_ref, "dependsOn": [c["bom-ref"] for c in components]}],
    }
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
