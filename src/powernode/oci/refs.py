"""Parse and print OCI references: ``[host[:port]/]repo/name[:tag][@sha256:…]``.

Grammar from the OCI distribution spec ("Pulling manifests": ``<name>`` and
``<reference>``) and the ``distribution/reference`` grammar it descends from::

    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [domain "/"] path-component ("/" path-component)*
    domain         := host [":" port]          ; host: DNS name, IPv4 or [IPv6]
    path-component := [a-z0-9]+ ((\\.|_|__|-+) [a-z0-9]+)*
    tag            := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}

The first component is a registry host only if it holds a ``.`` or ``:`` or
is ``localhost`` (the rule docker and containers/image use), so
``library/ubuntu`` is a repository and ``127.0.0.1:5000/ubuntu`` is not.
Parsing is pure; nothing here resolves defaults such as ``docker.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from powernode.errors import DataError
from powernode.oci.digest import Digest

MAX_NAME = 255  # distribution's limit on the repository name with its domain
MAX_REFERENCE = 1024  # bound on untrusted input before any regex runs

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DOMAIN_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
DOMAIN_RE = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``registry`` is ``None`` when the text named no host."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        check_repository(self.repository)
        if self.tag is not None and TAG_RE.fullmatch(self.tag) is None:
            raise DataError(
                f"invalid tag {self.tag!r}: use letters, digits, '_', '.', '-' "
                "(at most 128, not starting with '.' or '-')"
            )
        if self.registry is not None and DOMAIN_RE.fullmatch(self.registry) is None:
            raise DataError(f"invalid registry host {self.registry!r}: expected host[:port]")
        name_len = len(self.repository) + (len(self.registry) + 1 if self.registry else 0)
        if name_len > MAX_NAME:
            raise DataError(f"reference name is {name_len} characters; the limit is {MAX_NAME}")

    @property
    def target(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        if self.tag is not None:
            return self.tag
        raise DataError(
            f"reference {self} has neither a tag nor a digest; add ':tag' or '@sha256:…'"
        )

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def check_repository(name: str) -> str:
    """Return ``name`` if it is a valid repository path, else raise DataError."""
    if len(name) > MAX_NAME:
        raise DataError(f"repository name is {len(name)} characters; the limit is {MAX_NAME}")
    if REPOSITORY_RE.fullmatch(name) is None:
        raise DataError(
            f"invalid repository name {name!r}: use lowercase path components "
            "[a-z0-9] joined by '.', '_', '__' or '-', separated by '/'"
        )
    return name


def parse_reference(text: str) -> Reference:
    """Parse ``text``; raise :class:`DataError` saying which part is wrong."""
    if len(text) > MAX_REFERENCE:
        raise DataError(f"reference is {len(text)} characters; the limit is {MAX_REFERENCE}")
    rest, at, digest_text = text.partition("@")
    digest = Digest.parse(digest_text) if at else None
    registry: str | None = None
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, rest = first, remainder
    # A tag's ':' is the last one and comes after the last '/'; ports come before.
    name, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:
        name, tag_or_none = rest, None
    else:
        tag_or_none = tag
    if not name:
        raise DataError(f"invalid reference {text!r}: no repository name")
    return Reference(registry, name, tag_or_none, digest)
