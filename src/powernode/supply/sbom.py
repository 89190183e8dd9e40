"""The module's SBOM as CycloneDX 1.6 JSON, written with cyclonedx-python-lib.

Debian packages are ``library`` components named by purl
(``pkg:deb/debian/<name>@<version>?arch=<arch>&distro=debian-12``, purl-spec's
``deb`` type; the distro qualifier is ``debian-<release>``, translated from a
suite codename), with their exact versions, their source package as a ``powernode:source``
property (Debian's OSV records name source packages), and their licenses when the package's
``/usr/share/doc/<name>/copyright`` is machine-readable (DEP-5, parsed by
python-debian): each ``License:`` synopsis, as an SPDX id when it maps to one
(``GPL-2+`` → ``GPL-2.0-or-later``), else by name. Shipped files are ``file``
components with their SHA-256. Serial number (UUIDv5 of the composefs digest)
and timestamp (SOURCE_DATE_EPOCH) come from the inputs, so a rebuild writes the
same bytes.
"""

from __future__ import annotations

import functools
import io
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.spdx import fixup_id
from cyclonedx.validation.json import JsonStrictValidator
from debian.copyright import Copyright, License
from debian.copyright import Error as CopyrightError
from packageurl import PackageURL

from powernode import __version__
from powernode.errors import DataError

NAMESPACE: Final = uuid.UUID("5b0f7c52-3c9e-4c41-9a57-2b6f1d9f0c11")  # powernode SBOM serials
CODENAMES: Final = {"buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13"}
# Debian's DEP-5 short names (copyright-format 1.0, "License short name") -> SPDX ids.
DEBIAN_TO_SPDX: Final = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later",
    "gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later",
    "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later",
    "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later",
    "expat": "MIT", "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause", "artistic": "Artistic-1.0-Perl",
    "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0", "zlib": "Zlib", "isc": "ISC",
}  # fmt: skip
MAX_COPYRIGHT = 1 << 20


class SbomError(DataError, ValueError):
    """The SBOM does not validate against CycloneDX 1.6."""


@dataclass(frozen=True, order=True)
class DebPackage:
    name: str
    version: str
    arch: str
    source: str | None = None
    licenses: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str | None


def distro_qualifier(suite: str | None) -> str | None:
    """``debian-12`` for ``bookworm`` (or ``debian-12``, ``12``); None when unknown."""
    if not suite:
        return None
    s = suite.lower().removeprefix("debian-")
    s = CODENAMES.get(s, s)
    return f"debian-{s}" if s.replace(".", "").isdigit() else f"debian-{suite.lower()}"


def dep5_licenses(text: str) -> tuple[str, ...] | None:
    """The license synopses of a DEP-5 copyright file; None when it is not machine-readable."""
    if len(text) > MAX_COPYRIGHT:
        return None
    try:
        c = Copyright(io.StringIO(text), strict=False)
    except (CopyrightError, ValueError):
        return None
    found: list[str] = []
    header = c.header.license
    for lic in [header] + [p.license for p in c.all_files_paragraphs()]:
        if isinstance(lic, License) and lic.synopsis and lic.synopsis not in found:
            found.append(lic.synopsis)
    return tuple(found)


def _licenses(synopses: Sequence[str]) -> list[DisjunctiveLicense]:
    out: list[DisjunctiveLicense] = []
    for syn in synopses:
        # "GPL-2+ or Artistic" lists alternatives; each is a license the package carries.
        for part in syn.replace(" | ", " or ").split(" or "):
            name = part.strip().strip(",")
            if not name:
                continue
            spdx = fixup_id(DEBIAN_TO_SPDX.get(name.lower(), name))
            out.append(DisjunctiveLicense(id=spdx) if spdx else DisjunctiveLicense(name=name))
    return out


def package_purl(pkg: DebPackage, distro: str | None) -> PackageURL:
    quals = {"arch": pkg.arch} | ({"distro": distro} if distro else {})
    return PackageURL(type="deb", namespace="debian", name=pkg.name, version=pkg.version,
                      qualifiers=quals)  # fmt: skip


def make_sbom(
    *,
    name: str,
    version: str,
    composefs_digest: str,
    source_date_epoch: int,
    packages: Sequence[DebPackage],
    files: Sequence[FileEntry],
    suite: str | None,
) -> bytes:
    """The SBOM bytes (CycloneDX 1.6 JSON), validated before they are returned."""
    distro = distro_qualifier(suite)
    root = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=name,
        version=version,
        bom_ref=f"module:{name}@{version}",
        properties=[Property(name="powernode:composefs_digest", value=composefs_digest)],
    )
    bom = Bom(serial_number=uuid.uuid5(NAMESPACE, composefs_digest))
    bom.metadata.timestamp = datetime.fromtimestamp(source_date_epoch, UTC)
    bom.metadata.component = root
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="powernode", version=__version__)
    )
    comps: list[Component] = []
    for pkg in sorted(packages):
        purl = package_purl(pkg, distro)
        props = [Property(name="powernode:source", value=pkg.source)] if pkg.source else []
        comps.append(
            Component(
                type=ComponentType.LIBRARY,
                name=pkg.name,
                version=pkg.version,
                purl=purl,
                bom_ref=purl.to_string(),
                licenses=_licenses(pkg.licenses),
                properties=props,
            )
        )
    for c in comps:
        bom.components.add(c)
    bom.register_dependency(root, comps)
    doc = json.loads(JsonV1Dot6(bom).output_as_string(indent=2))
    _add_files(doc, root.bom_ref.value or "", files)
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    validate(data)
    return data


def _add_files(
    doc: dict[str, Any],  # Any: the CycloneDX JSON document
    root_ref: str,
    files: Sequence[FileEntry],
) -> None:
    """The file components, added to the library's JSON as it would write them (type
    "file" sorts first, then by name; one dependency entry each, the root depending on
    all): the library's model registers every component by a linear search, and a
    module's 10,000 files made that minutes. Any: the CycloneDX JSON document."""
    entries = []
    for f in sorted(files, key=lambda f: f.path):
        entry: dict[str, Any] = {"name": f.path, "type": "file"}  # Any: a JSON object
        entry["bom-ref"] = f"file:{f.path}"
        if f.sha256:
            entry["hashes"] = [{"alg": "SHA-256", "content": f.sha256}]
        entries.append(entry)
    doc["components"] = entries + list(doc.get("components", []))
    deps: list[dict[str, Any]] = list(doc.get("dependencies", []))  # Any: JSON objects
    for d in deps:
        if d.get("ref") == root_ref:
            d["dependsOn"] = sorted([*d.get("dependsOn", []), *(e["bom-ref"] for e in entries)])
    deps += [{"ref": e["bom-ref"]} for e in entries]
    doc["dependencies"] = sorted(deps, key=lambda d: str(d["ref"]))


def _canonical(item: object) -> str:
    """A key equal for items JSON Schema calls equal (1 == 1.0; true != 1; key order free)."""

    def norm(v: object) -> object:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, Mapping):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(item), sort_keys=True)


def _unique_items(
    validator: object,
    wanted: object,
    instance: object,
    schema: object,  # Any-free: jsonschema's keyword signature
) -> Iterator[Exception]:
    """``uniqueItems`` in linear time (jsonschema's compares every pair: a module's SBOM lists
    every file, and 10,000 files took minutes)."""
    from jsonschema.exceptions import ValidationError  # noqa: PLC0415

    if wanted and isinstance(instance, list):
        keys = [_canonical(x) for x in instance]
        if len(set(keys)) != len(keys):
            yield ValidationError(f"{len(keys) - len(set(keys))} non-unique element(s)")


@functools.cache
def _validator() -> Any:  # Any: a jsonschema validator class made at run time
    from jsonschema.validators import extend  # noqa: PLC0415

    base: Any = JsonStrictValidator(SchemaVersion.V1_6)._validator  # Any: its private attrs
    fast = extend(type(base), validators={"uniqueItems": _unique_items})  # type: ignore[no-untyped-call]
    return fast(base.schema, registry=base._registry, format_checker=base.format_checker)


def validate(data: bytes) -> None:
    """Raise SbomError unless ``data`` validates against the CycloneDX 1.6 JSON schema (the
    library's strict schema, uniqueItems checked by hashing instead of pairwise)."""
    error = next(_validator().iter_errors(json.loads(data)), None)
    if error is not None:
        raise SbomError(f"the SBOM does not validate against CycloneDX 1.6: {error.message}")


def copyright_texts(read: Mapping[str, bytes]) -> dict[str, tuple[str, ...]]:
    """Package name -> licenses, from ``/usr/share/doc/<name>/copyright`` contents."""
    out: dict[str, tuple[str, ...]] = {}
    for pkg, data in read.items():
        lic = dep5_licenses(data.decode("utf-8", "replace"))
        if lic:
            out[pkg] = lic
    return out
