"""cosign's simple-signing payload: what a container signature signs.

The format (cosign ``specs/SIGNATURE_SPEC.md``, "Simple Signing"; Red Hat's
containers-signature(5) "atomic container signature" with cosign's type)::

    {"critical":{"identity":{"docker-reference":"<repository>"},
                 "image":{"docker-manifest-digest":"sha256:<hex>"},
                 "type":"cosign container image signature"},
     "optional":null}

cosign builds it with Go's ``encoding/json``: no spaces, struct fields in
that order, map keys (the ``optional`` annotations) sorted, ``<`` ``>`` ``&``
U+2028 U+2029 escaped as ``\\u003c``…; it writes the repository without tag
or digest and ``"optional":null`` when there are no annotations.
:func:`build_payload` reproduces those bytes exactly.

Parsing is strict (containers/image ``signature/simple.go`` is the model):
a size limit, no duplicate or unknown keys in ``critical``, exact types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from powernode.signing.errors import PayloadError, SigningSetupError

MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
PAYLOAD_TYPE = "cosign container image signature"

# cosign payloads are ~250 bytes plus annotations; 64 KiB bounds the work
# done on an unauthenticated blob.
MAX_PAYLOAD_SIZE = 64 << 10
MAX_REFERENCE_LENGTH = 1024
MAX_ANNOTATIONS = 64

# The OCI/distribution digest as powernode accepts it (sha256 only, like
# powernode.oci.digest).
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# distribution/reference's grammar for a repository name: an optional
# host[:port] and lowercase path components; no tag, no digest.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*")


@dataclass(frozen=True)
class SimpleSigningPayload:
    """A parsed payload: the signed repository, manifest digest and annotations."""

    docker_reference: str
    manifest_digest: str
    optional: dict[str, object] | None = field(default=None, compare=True, hash=False)


def check_repository(repo: str) -> str:
    """``repo`` if it is a repository name without tag or digest; raises otherwise."""
    if not isinstance(repo, str) or len(repo) > MAX_REFERENCE_LENGTH:
        raise SigningSetupError(
            f"repository name is not a string of ≤ {MAX_REFERENCE_LENGTH} characters"
        )
    if "@" in repo or REPOSITORY_RE.fullmatch(repo) is None:
        raise SigningSetupError(
            f"{repo!r} is not a repository name: give host[:port]/path without :tag or @digest "
            "(e.g. registry.example.com/acme/modules/nginx)"
        )
    return repo


def check_manifest_digest(digest: str) -> str:
    """``digest`` if it is ``sha256:<64 lowercase hex>``; raises otherwise."""
    if not isinstance(digest, str) or DIGEST_RE.fullmatch(digest) is None:
        raise SigningSetupError(
            f"{digest!r} is not a manifest digest: expected sha256:<64 lowercase hex digits>"
        )
    return digest


def build_payload(
    repo: str, manifest_digest: str, annotations: Mapping[str, str] | None = None
) -> bytes:
    """The payload bytes cosign would sign for ``repo`` at ``manifest_digest``."""
    check_repository(repo)
    check_manifest_digest(manifest_digest)
    optional: dict[str, str] | None = None
    if annotations:
        if len(annotations) > MAX_ANNOTATIONS:
            raise SigningSetupError(
                f"{len(annotations)} annotations; at most {MAX_ANNOTATIONS} are allowed"
            )
        for key, value in annotations.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise SigningSetupError(
                    f"annotation {key!r}={value!r}: keys and values must be strings, keys non-empty"
                )
        # Go marshals a map with its keys sorted.
        optional = dict(sorted(annotations.items()))
    document = {
        "critical": {
            "identity": {"docker-reference": repo},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": optional,
    }
    data = _go_json(document)
    if len(data) > MAX_PAYLOAD_SIZE:
        raise SigningSetupError(
            f"the payload would be {len(data)} bytes; the limit is {MAX_PAYLOAD_SIZE} "
            "(use fewer or shorter annotations)"
        )
    return data


def parse_payload(data: bytes) -> SimpleSigningPayload:
    """Parse a simple-signing payload strictly; :class:`PayloadError` says what is wrong."""
    if len(data) > MAX_PAYLOAD_SIZE:
        raise PayloadError(f"payload is {len(data)} bytes; the limit is {MAX_PAYLOAD_SIZE}")
    try:
        text = data.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise PayloadError(f"payload is not UTF-8 (byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise PayloadError(
            f"payload is not JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from e
    except RecursionError as e:
        raise PayloadError("payload JSON is nested too deeply") from e
    # _unique_keys raises PayloadError itself for duplicate keys.
    top = _object(document, "payload")
    _only_keys(top, {"critical", "optional"}, "payload", required={"critical"})
    critical = _object(top["critical"], "critical")
    _only_keys(critical, {"identity", "image", "type"}, "critical")
    identity = _object(critical["identity"], "critical.identity")
    _only_keys(identity, {"docker-reference"}, "critical.identity")
    image = _object(critical["image"], "critical.image")
    _only_keys(image, {"docker-manifest-digest"}, "critical.image")

    kind = critical["type"]
    if kind != PAYLOAD_TYPE:
        raise PayloadError(f"critical.type is {kind!r}; expected {PAYLOAD_TYPE!r}")
    reference = identity["docker-reference"]
    if not isinstance(reference, str) or not 0 < len(reference) <= MAX_REFERENCE_LENGTH:
        raise PayloadError(
            f"critical.identity.docker-reference must be a non-empty string of ≤ "
            f"{MAX_REFERENCE_LENGTH} characters, got {_short(reference)}"
        )
    digest = image["docker-manifest-digest"]
    if not isinstance(digest, str) or DIGEST_RE.fullmatch(digest) is None:
        raise PayloadError(
            f"critical.image.docker-manifest-digest must be sha256:<64 hex>, got {_short(digest)}"
        )
    optional = top.get("optional")
    if optional is not None:
        optional = _object(optional, "optional")
        if len(optional) > MAX_ANNOTATIONS:
            raise PayloadError(
                f"optional has {len(optional)} entries; the limit is {MAX_ANNOTATIONS}"
            )
    return SimpleSigningPayload(reference, digest, optional)


def repository_of(reference: str) -> str:
    """The repository part of a docker reference: drops ``@digest`` and ``:tag``."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    # A colon after the last slash is a tag; before it, a registry port.
    return name[:colon] if colon > slash else name


# -- internals ---------------------------------------------------------------

# Go's encoding/json HTML-escapes these even outside HTML (encode.go, "HTMLEscape").
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def _go_json(document: object) -> bytes:
    # Dict order is insertion order: the caller builds ``critical`` in Go's
    # struct order and ``optional`` sorted, as Go emits them.
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group()], text).encode("utf-8")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise PayloadError(f"payload has the key {key!r} twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    raise PayloadError(f"payload contains {name}, which is not JSON")


def _object(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise PayloadError(f"{path} must be a JSON object, got {_short(value)}")
    return value


def _only_keys(
    obj: dict[str, object], allowed: set[str], path: str, *, required: set[str] | None = None
) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise PayloadError(f"{path} has unknown field(s) {', '.join(map(repr, unknown))}")
    missing = sorted((allowed if required is None else required) - set(obj))
    if missing:
        raise PayloadError(f"{path} is missing field(s) {', '.join(map(repr, missing))}")


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
