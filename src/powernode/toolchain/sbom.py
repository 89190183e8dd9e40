"""The artifact's SBOM: CycloneDX 1.6 JSON of the Debian packages and the files shipped.

Written by :mod:`powernode.supply.sbom` with cyclonedx-python-lib (issue 18):
packages are ``library`` components named by purl
(``pkg:deb/debian/<name>@<version>?arch=<arch>&distro=debian-12``), with
their licenses when the package's copyright file is machine-readable (DEP-5);
shipped files are ``file`` components with their SHA-256. Everything is
derived from the build's inputs: the serial number is a UUIDv5 of the
composefs digest and the timestamp is SOURCE_DATE_EPOCH, so a rebuild writes
the same bytes. :func:`purl` is the purl-spec text of a package (the version
percent-encoded so an epoch's ``:`` and a ``+`` survive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from powernode.supply import sbom as cdx
from powernode.toolchain.build.tree import ShippedFile


@dataclass(frozen=True, order=True)
class Package:
    """One installed Debian package (from dpkg's status file)."""

    name: str
    version: str
    arch: str
    # The source package (dpkg's Source:, without a version); not part of identity.
    source: str | None = field(default=None, compare=False)

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
    licenses: Mapping[str, tuple[str, ...]] | None = None,
) -> bytes:
    """The SBOM bytes: CycloneDX 1.6 JSON written by supply/sbom.py (cyclonedx-python-lib).

    ``distro`` is the package tree's suite (``bookworm``): the purls say
    ``distro=debian-12``. ``licenses`` maps a package to the license synopses
    of its machine-readable copyright file.
    """
    lic = licenses or {}
    return cdx.make_sbom(
        name=name,
        version=version,
        composefs_digest=composefs_digest,
        source_date_epoch=source_date_epoch,
        packages=[
            cdx.DebPackage(p.name, p.version, p.arch, p.source, lic.get(p.name, ()))
            for p in packages
        ],
        files=[cdx.FileEntry(f.path, f.sha256) for f in files if f.kind == "file"],
        suite=distro,
    )
