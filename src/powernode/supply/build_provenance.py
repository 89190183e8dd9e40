"""The SLSA provenance of a built module, from its artifact directory (docs/artifact.md).

``resolvedDependencies``: each lock file given (``file:<name>``, sha256), the
exact Debian packages (``package-list.txt`` as one digest, and each
``name=version`` as a purl), and the source tree (an URI and its digest, as
the builder knows them). ``externalParameters``: the module's name, version,
``source_date_epoch`` and package source from ``module.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from packageurl import PackageURL

from powernode.errors import DataError
from powernode.supply import provenance
from powernode.supply.sbom import distro_qualifier

MAX_INPUT = 64 * 1024 * 1024


class BuildInputError(DataError, ValueError):
    pass


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_INPUT:
            raise BuildInputError(f"{path} is over {MAX_INPUT} bytes")
        return path.read_bytes()
    except OSError as e:
        raise BuildInputError(f"cannot read {path}: {e.strerror}") from None


def statement_for_build(
    out: Path,
    *,
    subject_name: str,
    subject_digest: str,
    builder_id: str,
    locks: list[Path],
    source: tuple[str, str] | None,
) -> dict[str, object]:
    """The in-toto statement for the artifact in ``out`` pushed as ``subject_name@digest``."""
    try:
        config = json.loads(_read(out / "module.json"))
    except ValueError as e:
        raise BuildInputError(f"{out / 'module.json'} is not JSON: {e}") from None
    deps: list[provenance.Dependency] = []
    for lock in locks:
        sha = hashlib.sha256(_read(lock)).hexdigest()
        deps.append(provenance.Dependency(f"file:{lock.name}", {"sha256": sha}, "lock"))
    plist = _read(out / "package-list.txt")
    deps.append(
        provenance.Dependency(
            "file:package-list.txt", {"sha256": hashlib.sha256(plist).hexdigest()}, "packages"
        )
    )
    pkg_source = config.get("package_source") or {}
    distro = distro_qualifier(pkg_source.get("suite")) if isinstance(pkg_source, dict) else None
    for pin in config.get("packages") or []:
        name, _, version = str(pin).partition("=")
        if version:
            quals = {"distro": distro} if distro else {}
            purl = PackageURL("deb", "debian", name, version, quals)
            deps.append(provenance.Dependency(purl.to_string(), {}))
    if source is not None:
        uri, digest = source
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64:
            raise BuildInputError(f"source digest {digest!r} is not sha256:<64 hex>")
        deps.append(provenance.Dependency(uri, {"sha256": hexpart}, "source"))
    params = {
        "module": config.get("name"),
        "version": config.get("version"),
        "composefs_digest": config.get("composefs_digest"),
        "source_date_epoch": config.get("source_date_epoch"),
        "package_source": pkg_source,
    }
    return provenance.statement(
        subject_name=subject_name,
        subject_digest=subject_digest,
        builder_id=builder_id,
        dependencies=deps,
        parameters=params,
    )
