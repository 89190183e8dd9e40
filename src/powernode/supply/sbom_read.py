"""The Debian packages a CycloneDX SBOM (1.4–1.6 JSON) lists, for vulnerability matching.

Components with a ``pkg:deb`` purl become :class:`powernode.supply.osv.Pkg`
(name, exact version, the ``distro`` qualifier, and the source package when
the purl's ``upstream`` qualifier or a ``powernode:source`` property names
it: Debian's OSV records are per source package).
"""

from __future__ import annotations

from packageurl import PackageURL

from powernode.errors import DataError
from powernode.supply.osv import Pkg

MAX_COMPONENTS = 200_000


class SbomError(DataError, ValueError):
    pass


def packages_of(doc: object) -> tuple[list[Pkg], int]:
    """(Debian packages, number of components) of a CycloneDX JSON document."""
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        raise SbomError("not a CycloneDX JSON document (bomFormat must be CycloneDX)")
    comps = doc.get("components", [])
    if not isinstance(comps, list) or len(comps) > MAX_COMPONENTS:
        raise SbomError(f"components must be a list of at most {MAX_COMPONENTS}")
    out: list[Pkg] = []
    for i, c in enumerate(comps):
        if not isinstance(c, dict):
            raise SbomError(f"components[{i}] is not an object")
        purl = c.get("purl")
        if not isinstance(purl, str) or not purl.startswith("pkg:deb/"):
            continue
        try:
            p = PackageURL.from_string(purl)
        except ValueError as e:
            raise SbomError(f"components[{i}].purl {purl!r}: {e}") from None
        if not p.version:
            raise SbomError(f"components[{i}].purl {purl!r} has no version")
        quals = p.qualifiers if isinstance(p.qualifiers, dict) else {}
        source = quals.get("upstream")
        for prop in c.get("properties") or []:
            if isinstance(prop, dict) and prop.get("name") == "powernode:source":
                source = str(prop.get("value"))
        if source:
            source = source.split("@", 1)[0]
        out.append(Pkg(p.name, p.version, quals.get("distro"), source, purl))
    return out, len(comps)
