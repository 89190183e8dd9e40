"""Verify the cosign signatures of a manifest digest against a trust policy.

Input: the layers of the manifest under ``sha256-<hex>.sig`` (as the OCI
client fetched them). Output: the one verified signature, or an exception
saying why none verified. Never a bool.

For each layer, in order:

1. it must be a simple-signing layer with a base64 signature annotation;
2. the policy checks the signature (and certificate) — see
   :mod:`powernode.signing.policy`;
3. the now-authenticated payload must parse and name ``manifest_digest``
   and, unless ``match_reference=False``, the repository ``repo``.

Any one signature that passes suffices (cosign's rule: other, unverifiable
signatures may sit beside it, e.g. from a rotated key). When none passes,
the error lists every signature's reason; its type is the reasons' common
type (e.g. :class:`CertificateError` when every certificate was expired),
else :class:`VerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from powernode.errors import VerificationError
from powernode.signing.errors import NoSignaturesError, PayloadError, PayloadMismatchError
from powernode.signing.payload import (
    MEDIA_TYPE,
    SimpleSigningPayload,
    check_manifest_digest,
    check_repository,
    parse_payload,
    repository_of,
)
from powernode.signing.policy import SignatureCandidate, Signer, TrustPolicy
from powernode.signing.sign import (
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    Layer,
)
from powernode.signing.tlog import BUNDLE_ANNOTATION

log = logging.getLogger(__name__)

# Bounds on what an attacker who can push to the .sig tag makes us do.
MAX_SIGNATURES = 256
MAX_SIGNATURE_B64 = 4096


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that the policy trusts, over a payload naming the artifact."""

    repository: str
    manifest_digest: str
    payload: SimpleSigningPayload
    payload_bytes: bytes
    signature_b64: str
    signer: Signer
    index: int  # 0-based position of the layer that verified


def verify_signatures(
    repo: str,
    manifest_digest: str,
    layers: Sequence[tuple[str, bytes, Mapping[str, str]]],
    policy: TrustPolicy,
    *,
    match_reference: bool = True,
) -> VerifiedSignature:
    """The first signature in ``layers`` that ``policy`` trusts for ``repo@manifest_digest``.

    ``layers`` are ``(media_type, blob, annotations)`` as in the signature
    manifest. ``match_reference=False`` accepts a payload signed for another
    repository (a mirror); the digest must always match.
    """
    check_repository(repo)
    check_manifest_digest(manifest_digest)
    artifact = f"{repo}@{manifest_digest}"
    if not layers:
        raise NoSignaturesError(
            f"{artifact} has no signatures (nothing under its .sig tag); "
            "sign it with `powernode module sign` or pull a signed artifact"
        )
    if len(layers) > MAX_SIGNATURES:
        raise VerificationError(
            f"{artifact}: {len(layers)} signatures exceed the limit of {MAX_SIGNATURES}; "
            "the .sig tag looks flooded, refusing to check them"
        )
    failures: list[VerificationError] = []
    for index, (media_type, data, notes) in enumerate(layers):
        position = f"signature {index + 1} of {len(layers)}"
        try:
            _check_shape(media_type, data, notes, position)
            verified = _verify_one(
                Layer(media_type, data, dict(notes)),
                policy,
                position,
                repo=repo,
                manifest_digest=manifest_digest,
                match_reference=match_reference,
            )
        except VerificationError as e:
            log.debug("%s: %s", artifact, e)
            failures.append(e)
            continue
        log.info("%s: %s verified, signed by %s", artifact, position, verified.signer)
        return VerifiedSignature(
            repo,
            manifest_digest,
            verified.payload,
            data,
            notes[SIGNATURE_ANNOTATION],
            verified.signer,
            index,
        )
    kinds = {type(e) for e in failures}
    kind = kinds.pop() if len(kinds) == 1 else VerificationError
    raise kind(
        f"{artifact} has no signature trusted by {policy.describe()}: "
        + "; ".join(str(e) for e in failures)
    )


@dataclass(frozen=True)
class _Checked:
    payload: SimpleSigningPayload
    signer: Signer


def _verify_one(
    layer: Layer,
    policy: TrustPolicy,
    position: str,
    *,
    repo: str,
    manifest_digest: str,
    match_reference: bool,
) -> _Checked:
    media_type, data, annotations = layer
    if media_type != MEDIA_TYPE:
        raise PayloadError(f"{position} has media type {media_type!r}, not {MEDIA_TYPE!r}")
    encoded = annotations.get(SIGNATURE_ANNOTATION)
    if not isinstance(encoded, str) or not encoded:
        raise PayloadError(f"{position} has no {SIGNATURE_ANNOTATION} annotation")
    if len(encoded) > MAX_SIGNATURE_B64:
        raise PayloadError(
            f"{position}: the signature annotation is longer than {MAX_SIGNATURE_B64}"
        )
    try:
        # Go's base64.StdEncoding (cosign's decoder) skips CR and LF; so do we.
        signature = base64.b64decode(encoded.replace("\n", "").replace("\r", ""), validate=True)
    except binascii.Error as e:
        raise PayloadError(f"{position}: the signature annotation is not base64") from e
    certificate = annotations.get(CERTIFICATE_ANNOTATION)
    chain = annotations.get(CHAIN_ANNOTATION)
    candidate = SignatureCandidate(
        position=position,
        payload=data,
        signature=signature,
        certificate_pem=_ascii(certificate, position, "certificate"),
        chain_pem=_ascii(chain, position, "chain"),
        bundle=annotations.get(BUNDLE_ANNOTATION),
    )
    signer = policy.verify(candidate)
    # Only now is the payload authentic; its claims decide what was signed.
    try:
        payload = parse_payload(data)
    except PayloadError as e:
        raise PayloadError(f"{position}: {e}") from e
    if payload.manifest_digest != manifest_digest:
        raise PayloadMismatchError(
            f"{position} (by {signer}) signs {payload.manifest_digest}, not {manifest_digest}: "
            "the signature belongs to another artifact"
        )
    if match_reference and repository_of(payload.docker_reference) != repo:
        raise PayloadMismatchError(
            f"{position} (by {signer}) was made for repository {payload.docker_reference!r}, "
            f"not {repo!r}; verify with match_reference=False if {repo} is a mirror"
        )
    return _Checked(payload, signer)


def _check_shape(media_type: object, data: object, notes: object, position: str) -> None:
    # The layers come from JSON an attacker may have written: check the types
    # the annotations promise before trusting them.
    if not isinstance(media_type, str) or not isinstance(data, bytes):
        raise PayloadError(f"{position}: media type must be a string and the blob bytes")
    if not isinstance(notes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in notes.items()
    ):
        raise PayloadError(f"{position}: annotations must map strings to strings")


def _ascii(value: str | None, position: str, what: str) -> bytes | None:
    if value is None:
        return None
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as e:
        raise PayloadError(f"{position}: the {what} annotation is not ASCII PEM") from e
