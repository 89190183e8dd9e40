"""The CycloneDX 1.6 SBOM: purls with distro qualifiers, exact versions, DEP-5 licenses,
file hashes; validated by cyclonedx-python-lib's own validator; reproducible."""

from __future__ import annotations

import json

import pytest

from powernode.supply import sbom
from powernode.supply.sbom_read import packages_of

DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: zlib
Source: https://zlib.net/

Files: *
Copyright: 1995-2022 Jean-loup Gailly and Mark Adler
License: Zlib

Files: contrib/dotzlib/*
Copyright: 2004 Henrik Ravn
License: BSL-1.0 or GPL-2+

License: Zlib
 This software is provided 'as-is', without any express or implied warranty.

License: BSL-1.0
 Boost Software License.
"""
NOT_DEP5 = "This is the Debian prepackaged version of hello.\n\nCopyright (C) 1992 FSF\n"
PKGS = [
    sbom.DebPackage("libc6", "2.36-9+deb12u10", "amd64", "glibc"),
    sbom.DebPackage("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib", sbom.dep5_licenses(DEP5) or ()),
]
FILES = [sbom.FileEntry("/usr/bin/app", "ab" * 32), sbom.FileEntry("/etc/app.conf", "cd" * 32)]


def make(**kw: object) -> bytes:
    args: dict[str, object] = dict(
        name="my-redis", version="0.1.0", composefs_digest="sha256:" + "ee" * 32,
        source_date_epoch=1_700_000_000, packages=PKGS, files=FILES, suite="bookworm",
    )  # fmt: skip
    return sbom.make_sbom(**(args | kw))  # type: ignore[arg-type]


def test_dep5_licenses() -> None:
    assert sbom.dep5_licenses(DEP5) == ("Zlib", "BSL-1.0 or GPL-2+")
    assert sbom.dep5_licenses(NOT_DEP5) is None


def test_sbom_is_cyclonedx_16_and_validates() -> None:
    data = make()
    sbom.validate(data)  # the library's strict JSON-schema validator
    doc = json.loads(data)
    assert doc["specVersion"] == "1.6" and doc["bomFormat"] == "CycloneDX"
    assert doc["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    libs = {c["name"]: c for c in doc["components"] if c["type"] == "library"}
    assert libs["zlib1g"]["purl"] == (
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12"
    )
    assert libs["libc6"]["purl"] == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12"
    )
    assert libs["zlib1g"]["version"] == "1:1.2.13.dfsg-1"
    lic = [entry["license"] for entry in libs["zlib1g"]["licenses"]]
    assert {"id": "Zlib"} in lic and {"id": "BSL-1.0"} in lic and {"id": "GPL-2.0-or-later"} in lic
    assert "licenses" not in libs["libc6"]  # no machine-readable copyright: none claimed
    files = {c["name"]: c for c in doc["components"] if c["type"] == "file"}
    assert files["/usr/bin/app"]["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    # What the platform reads back for matching.
    pkgs, n = packages_of(doc)
    assert n == 4
    assert {(p.name, p.version, p.distro, p.source) for p in pkgs} == {
        ("libc6", "2.36-9+deb12u10", "debian-12", "glibc"),
        ("zlib1g", "1:1.2.13.dfsg-1", "debian-12", "zlib"),
    }


def test_sbom_is_reproducible() -> None:
    assert make() == make(packages=list(reversed(PKGS)), files=list(reversed(FILES)))


def test_invalid_sbom_is_refused() -> None:
    doc = json.loads(make())
    doc["components"][0]["type"] = "gadget"
    with pytest.raises(sbom.SbomError, match="does not validate"):
        sbom.validate(json.dumps(doc).encode())


def test_unique_items_is_checked_by_hash_with_json_schema_equality() -> None:
    """The schema's uniqueItems (jsonschema compares every pair: minutes for a module's 10,000
    files) is checked by hashing, with JSON Schema's equality: 1 == 1.0, true != 1, key
    order free. Both the library's validator and ours refuse a duplicated file component."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    doc = json.loads(make())
    doc["components"].append(dict(reversed(list(doc["components"][-1].items()))))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is not None
    with pytest.raises(sbom.SbomError, match="non-unique"):
        sbom.validate(json.dumps(doc).encode())
    key = sbom._canonical
    assert key([1, {"a": 2.0, "b": True}]) == key([1.0, {"b": True, "a": 2}])
    assert key(True) != key(1) and key("1") != key(1)


def test_a_large_sbom_validates() -> None:
    """5,000 files: every one a distinct component (behaviour; bench/ holds no timing)."""
    files = [sbom.FileEntry(f"/usr/lib/f{i:05d}", f"{i:064x}") for i in range(5_000)]
    data = make(files=files)
    sbom.validate(data)
    assert sum(1 for c in json.loads(data)["components"] if c["type"] == "file") == 5_000


@pytest.mark.parametrize(
    ("suite", "qualifier"),
    [("bookworm", "debian-12"), ("debian-12", "debian-12"), ("12", "debian-12"), (None, None)],
)
def test_distro_qualifier(suite: str | None, qualifier: str | None) -> None:
    assert sbom.distro_qualifier(suite) == qualifier
