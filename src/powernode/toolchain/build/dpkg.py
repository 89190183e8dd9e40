"""Installed packages from a package tree's dpkg status file (deb-status(5)).

Only stanzas whose ``Status`` ends in ``installed`` count (half-installed or
config-files packages are not installed software). The file comes from the
package tar, so its size is bounded.
"""

from __future__ import annotations

import tarfile

from powernode.errors import SourceTreeError
from powernode.toolchain.build.sources import parse_deb822
from powernode.toolchain.sbom import Package

MAX_STATUS_BYTES = 64 << 20


def parse_status(text: str, where: str) -> tuple[Package, ...]:
    """``Package``/``Version``/``Architecture`` of every installed package, sorted."""
    out: set[Package] = set()
    for stanza in parse_deb822(text, where):
        status = stanza.get("status", "").split()
        if status[-1:] != ["installed"]:
            continue
        name, version = stanza.get("package"), stanza.get("version")
        if not name or not version:
            raise SourceTreeError(f"{where}: an installed stanza lacks Package or Version")
        source = stanza.get("source", "").split(" ", 1)[0] or None  # "src (ver)" -> "src"
        out.add(Package(name, version, stanza.get("architecture", "all"), source))
    return tuple(sorted(out))


def packages_from_status(
    tar: tarfile.TarFile, member: tarfile.TarInfo | None, where: str
) -> tuple[Package, ...]:
    """The installed packages recorded in ``member`` (var/lib/dpkg/status) of ``tar``."""
    if member is None:
        raise SourceTreeError(f"{where}: has no var/lib/dpkg/status; not a package tree")
    if member.size > MAX_STATUS_BYTES:
        raise SourceTreeError(f"{where}: dpkg status is {member.size} bytes; over the limit")
    stream = tar.extractfile(member)
    if stream is None:
        raise SourceTreeError(f"{where}: cannot read var/lib/dpkg/status")
    with stream:
        text = stream.read(MAX_STATUS_BYTES).decode("utf-8", "replace")
    return parse_status(text, f"{where}:/var/lib/dpkg/status")
