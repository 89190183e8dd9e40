"""Command-line artifact references, as cosign/oras/skopeo users write them.

* ``oci:<layout-dir>:<repository>:<tag>`` — an OCI image layout directory
  (skopeo's ``oci:`` transport; the ref name in index.json is
  ``<repository>:<tag>``); ``oci:<layout-dir>:<tag>`` is short for
  repository ``module``. The directory may not contain ``:``.
* ``<registry>/<repository>:<tag>`` (or ``@sha256:…``) — a distribution
  registry. HTTPS, except plain HTTP for loopback hosts (``localhost``,
  ``127.x.x.x``, ``[::1]``) or with ``plain_http`` (oras's ``--plain-http``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from powernode.errors import ConfigError, DataError
from powernode.oci.distribution import Credentials, DistributionRegistry
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import Reference, parse_reference

DEFAULT_LAYOUT_REPOSITORY = "module"


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def registry_url(host: str, *, plain_http: bool = False) -> str:
    scheme = "http" if plain_http or _loopback(host) else "https"
    return f"{scheme}://{host}"


def open_target(
    text: str,
    *,
    plain_http: bool = False,
    credentials: Credentials | None = None,
) -> tuple[LayoutRegistry | DistributionRegistry, Reference]:
    """The registry and reference ``text`` names; raises ConfigError/DataError saying why not."""
    if text.startswith("oci:"):
        directory, sep, rest = text[4:].partition(":")
        if not directory or not sep or not rest:
            raise ConfigError(
                f"{text!r}: write oci:<layout-dir>:<repository>:<tag> or oci:<layout-dir>:<tag>"
            )
        if credentials is not None:
            raise ConfigError(f"{text!r}: credentials apply to registries, not layout directories")
        if ":" not in rest and "@" not in rest:
            rest = f"{DEFAULT_LAYOUT_REPOSITORY}:{rest}"
        ref = parse_reference(rest)
        if ref.registry is not None:
            raise DataError(f"{text!r}: a layout reference names no registry host")
        return LayoutRegistry(Path(directory)), ref
    scheme, sep, rest = text.partition("://")
    if sep and scheme in ("http", "https", "oci", "docker"):
        raise ConfigError(
            f"{text!r}: write the reference without a scheme, {rest!r} "
            "(HTTP is automatic for loopback registries; --plain-http for others)"
        )
    ref = parse_reference(text)
    if ref.registry is None:
        raise ConfigError(
            f"{text!r} names no registry: write <registry>/<repository>:<tag> "
            "(e.g. 127.0.0.1:5000/acme/chrony:1.0.0) or oci:<layout-dir>:<tag>"
        )
    url = registry_url(ref.registry, plain_http=plain_http)
    return DistributionRegistry(url, credentials=credentials), ref
