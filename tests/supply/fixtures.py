"""Evidence the supply-chain tests attach: SBOMs, signed provenance and VEX, OSV records.

The OSV records have the shape of Debian's (osv.dev ``Debian/all.zip``,
``DEBIAN-CVE-*``/``DSA-*``): ``affected[].package.ecosystem = "Debian:12"``,
source package names, one ``ECOSYSTEM`` range with ``introduced: "0"`` and
``fixed``.
"""

from __future__ import annotations

import json
from typing import Any

from powernode.signing.keys import PrivateKey
from powernode.supply import dsse, provenance, vex

BUILDER = "https://ci.powernode.test/builders/module@v1"
OTHER_BUILDER = "https://evil.example/builder"
DIGEST = "sha256:" + "ab" * 32
REPO = "127.0.0.1:5000/modules/my-redis"
PACKAGES = (
    ("openssl", "3.0.11-1~deb12u2", "amd64"),
    ("libssl3", "3.0.11-1~deb12u2", "amd64"),
    ("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
    ("redis-server", "5:7.0.15-1~deb12u1", "amd64"),
)
SOURCES = {"libssl3": "openssl", "zlib1g": "zlib", "redis-server": "redis"}


def purl(name: str, version: str, arch: str) -> str:
    return f"pkg:deb/debian/{name}@{version.replace(':', '%3A')}?arch={arch}&distro=debian-12"


def sbom(packages: tuple[tuple[str, str, str], ...] = PACKAGES) -> dict[str, Any]:
    comps: list[dict[str, Any]] = []
    for name, version, arch in packages:
        c: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl(name, version, arch),
            "name": name,
            "version": version,
            "purl": purl(name, version, arch),
        }
        if name in SOURCES:
            c["properties"] = [{"name": "powernode:source", "value": SOURCES[name]}]
        comps.append(c)
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": comps}


def provenance_statement(builder: str = BUILDER, digest: str = DIGEST) -> dict[str, Any]:
    return provenance.statement(
        subject_name=REPO,
        subject_digest=digest,
        builder_id=builder,
        dependencies=[
            provenance.Dependency("file:requirements.txt", {"sha256": "11" * 32}, "lock"),
            provenance.Dependency(purl(*PACKAGES[0]), {"sha256": "22" * 32}),
            provenance.Dependency("git+https://git.test/my-redis", {"sha256": "33" * 32}, "source"),
        ],
        parameters={"module": "my-redis", "version": "0.1.0", "arch": "amd64"},
    )


def provenance_envelope(
    key: PrivateKey | None, builder: str = BUILDER, digest: str = DIGEST
) -> dict[str, Any]:
    payload = json.dumps(provenance_statement(builder, digest)).encode()
    if key is None:
        return dsse.Envelope(dsse.INTOTO_PAYLOAD_TYPE, payload, ()).to_json()
    return dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, payload, key).to_json()


def vex_envelope(
    key: PrivateKey, vuln: str, status: str = "not_affected", **extra: str
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "vulnerability": {"name": vuln},
        "products": [{"@id": f"pkg:oci/my-redis@{DIGEST.replace(':', '%3A')}"}],
        "status": status,
        **extra,
    }
    if status == "not_affected" and "justification" not in extra:
        statement["justification"] = "vulnerable_code_not_in_execute_path"
    doc = vex.document(
        author="my-redis maintainers",
        doc_id="https://vex.test/my-redis/1",
        timestamp="2026-12-07T10:00:00Z",
        statements=[statement],
    )
    return dsse.sign(dsse.OPENVEX_PAYLOAD_TYPE, json.dumps(doc).encode(), key).to_json()


def osv_record(
    rid: str,
    package: str,
    fixed: str | None,
    *,
    severity: str | None = None,
    cvss: str | None = None,
    ecosystem: str = "Debian:12",
    modified: str = "2026-12-01T00:00:00Z",
    introduced: str = "0",
) -> dict[str, Any]:
    events: list[dict[str, str]] = [{"introduced": introduced}]
    if fixed is not None:
        events.append({"fixed": fixed})
    rec: dict[str, Any] = {
        "schema_version": "1.6.0",
        "id": rid,
        "modified": modified,
        "published": "2026-11-01T00:00:00Z",
        "aliases": [rid.removeprefix("DEBIAN-")] if rid.startswith("DEBIAN-") else [],
        "details": f"test record for {package}",
        "affected": [
            {
                "package": {
                    "ecosystem": ecosystem,
                    "name": package,
                    "purl": f"pkg:deb/debian/{package}?arch=source",
                },
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }
    if severity is not None:
        rec["database_specific"] = {"severity": severity}
    if cvss is not None:
        rec["severity"] = [{"type": "CVSS_V3", "score": cvss}]
    return rec


CRITICAL_CVSS = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
