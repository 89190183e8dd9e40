"""The apt sources a package build installs from: the host's, or ``--mirror``.

Reads ``/etc/apt/sources.list.d/debian.sources`` (deb822 format, sources.list(5)
"DEB822-STYLE FORMAT": stanzas of ``Field: value`` lines separated by blank
lines, ``#`` comments) so a build uses the same mirror and suites apt is
configured with. ``--mirror URL`` replaces them with one line for the same
suite. The suite is the first one of the first ``deb`` stanza.

Every line also carries ``non-free-firmware`` (added when the host's sources
lack it): boot firmware such as ``raspi-firmware`` lives only there, and
Debian's installer enables it by default since Debian 12 (release notes,
"Archive area for non-free firmware"). Same mirror, same suites; a missing
component on an older suite is a warning in apt, not an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import ConfigError

SOURCES = Path("etc/apt/sources.list.d/debian.sources")
MAX_SOURCES_BYTES = 1 << 20
_URL_RE = re.compile(r"(https?|file)://[^\s\[\]]+")
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
FIRMWARE = "non-free-firmware"


@dataclass(frozen=True)
class AptSources:
    """The suite to install and mmdebstrap's MIRROR arguments (``deb URI SUITE COMPONENTS``)."""

    suite: str
    lines: tuple[str, ...]


def parse_deb822(text: str, where: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 file (field names lower-cased; continuation lines joined)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise ConfigError(f"{where}:{n}:1: expected 'Field: value', got {line[:60]!r}")
        last = key.strip().lower()
        current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _checked(words: list[str], what: str, where: str) -> list[str]:
    for w in words:
        if _WORD_RE.fullmatch(w) is None:
            raise ConfigError(f"{where}: {what} {w!r} is not a plain apt word")
    return words


def read_sources(root: Path, mirror: str | None) -> AptSources:
    """The host's apt sources under ``root`` (a fake root in tests), or ``mirror``."""
    path = root / SOURCES
    try:
        data = path.read_bytes()[:MAX_SOURCES_BYTES]
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the apt sources ({e.strerror}); pass --mirror URL "
            "(e.g. --mirror http://deb.debian.org/debian)"
        ) from e
    stanzas = [
        s
        for s in parse_deb822(data.decode(errors="replace"), str(path))
        if "deb" in s.get("types", "").split() and s.get("enabled", "yes") != "no"
    ]
    if not stanzas:
        raise ConfigError(f"{path}: no 'Types: deb' stanza; pass --mirror URL")
    first = _checked(stanzas[0].get("suites", "").split(), "suite", str(path))
    if not first:
        raise ConfigError(f"{path}: the first deb stanza has no Suites; pass --mirror URL")
    suite = first[0]
    if mirror is not None:
        if _URL_RE.fullmatch(mirror) is None:
            raise ConfigError(
                f"--mirror {mirror!r} is not an http(s):// or file:// URL of a Debian archive"
            )
        return AptSources(suite, (f"deb {mirror} {suite} main {FIRMWARE}",))
    lines: list[str] = []
    for s in stanzas:
        words = _checked(s.get("components", "main").split(), "component", str(path))
        comps = " ".join(words if FIRMWARE in words else [*words, FIRMWARE])
        for uri in s.get("uris", "").split():
            if _URL_RE.fullmatch(uri) is None:
                raise ConfigError(f"{path}: URI {uri!r} is not an http(s):// or file:// URL")
            for su in _checked(s.get("suites", "").split(), "suite", str(path)):
                lines.append(f"deb {uri} {su} {comps}")
    return AptSources(suite, tuple(lines))
