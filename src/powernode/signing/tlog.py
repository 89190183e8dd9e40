"""When a keyless signature was made: a transparency log's signed entry timestamp.

Fulcio's certificates live 10 minutes, so "was the certificate valid?" must be
asked at the time the signature was made, and that time must be proven by a
third party, never taken from the signature or from the verifier's clock.
cosign proves it with the Rekor bundle it attaches to the signature layer as
the annotation ``dev.sigstore.cosign/bundle`` (cosign
``specs/SIGNATURE_SPEC.md``; ``pkg/cosign/bundle``)::

    {"SignedEntryTimestamp": "<base64 signature>",
     "Payload": {"body": "<base64 Rekor entry>", "integratedTime": <unix s>,
                 "logIndex": <int>, "logID": "<hex sha256 of the log key's DER>"}}

The SET is the log's signature over the RFC 8785 canonical JSON of
``Payload`` (keys sorted: body, integratedTime, logID, logIndex), ECDSA with
SHA-256 (cosign ``VerifySET``). It proves the log integrated ``body`` at
``integratedTime``. The body must then be shown to be *this* signature, or a
SET for another entry could be replayed beside it: a ``hashedrekord`` v0.0.1
entry whose data hash is the SHA-256 of the payload, whose signature is the
layer's signature and whose public key is the signing certificate (cosign
``VerifyBundle`` / ``compareSigs``).

Pure: bytes and a clock in, a :class:`SignedTime` out, or a
:class:`~powernode.signing.errors.TimestampError` saying what is wrong.
(An RFC 3161 timestamp, cosign's ``--timestamp-server-url``, is the other
proof sigstore accepts; it is not implemented.)
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from powernode.signing.errors import SigningSetupError, TimestampError

BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
MAX_BUNDLE = 64 << 10  # a bundle holds the certificate twice, base64: a few KiB
MAX_LOG_KEYS_PEM = 64 << 10
DEFAULT_MAX_FUTURE_SKEW = datetime.timedelta(minutes=5)

_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_PEM_KEY = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)

LogKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class SignedTime:
    """A signing time a trusted log vouches for."""

    time: datetime.datetime
    log_id: str
    log_index: int

    def __str__(self) -> str:
        return f"{self.time.isoformat()} (log {self.log_id[:12]}…, entry {self.log_index})"


@dataclass(frozen=True)
class TransparencyLogs:
    """The transparency logs (Rekor) whose signed entry timestamps are trusted.

    ``public_keys_pem``: one or more ``PUBLIC KEY`` PEM blocks (Rekor's is at
    ``/api/v1/log/publicKey``); each log's ID is the SHA-256 of its key's DER.
    ``max_future_skew``: how far past the verifier's clock a signing time may lie
    (clocks drift); later is refused.
    """

    public_keys_pem: bytes
    max_future_skew: datetime.timedelta = DEFAULT_MAX_FUTURE_SKEW
    _keys: dict[str, LogKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.public_keys_pem) > MAX_LOG_KEYS_PEM:
            raise SigningSetupError(
                f"transparency log keys: {len(self.public_keys_pem)} bytes; "
                f"the limit is {MAX_LOG_KEYS_PEM}"
            )
        blocks = _PEM_KEY.findall(self.public_keys_pem)
        if not blocks:
            raise SigningSetupError(
                "transparency log keys: no PUBLIC KEY PEM block (Rekor's key is served at "
                "/api/v1/log/publicKey)"
            )
        keys: dict[str, LogKey] = {}
        for n, block in enumerate(blocks, 1):
            try:
                key = serialization.load_pem_public_key(block)
            except ValueError as e:
                raise SigningSetupError(f"transparency log key {n}: not a public key: {e}") from e
            if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
                raise SigningSetupError(
                    f"transparency log key {n}: {type(key).__name__} is not supported "
                    "(ECDSA or Ed25519)"
                )
            keys[log_id(key)] = key
        if self.max_future_skew < datetime.timedelta(0):
            raise SigningSetupError("transparency logs: max_future_skew must not be negative")
        object.__setattr__(self, "_keys", keys)

    @property
    def log_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def verify_bundle(
        self,
        bundle: str | None,
        *,
        payload: bytes,
        signature: bytes,
        certificate: x509.Certificate,
        now: datetime.datetime,
        what: str,
    ) -> SignedTime:
        """The signing time ``bundle`` proves for this signature, or TimestampError."""
        if bundle is None:
            raise TimestampError(
                f"{what} carries no transparency log bundle (annotation {BUNDLE_ANNOTATION}), "
                "so nothing proves when it was made; sign with a transparency log "
                "(cosign's default, not --tlog-upload=false)"
            )
        if len(bundle) > MAX_BUNDLE:
            raise TimestampError(f"{what}: the bundle is {len(bundle)} bytes; limit {MAX_BUNDLE}")
        set_b64, body_b64, integrated, index, lid = _parse_bundle(bundle, what)
        key = self._keys.get(lid)
        if key is None:
            known = ", ".join(k[:12] + "…" for k in self._keys)
            raise TimestampError(
                f"{what}: the bundle comes from log {lid[:12]}…, which is not a configured "
                f"transparency log ({known}); configure its public key if you trust it"
            )
        # RFC 8785 canonical form: the values were checked to be base64/hex strings and
        # integers, which json.dumps writes canonically; keys in code point order.
        canonical = (
            f'{{"body":{json.dumps(body_b64)},"integratedTime":{integrated},'
            f'"logID":{json.dumps(lid)},"logIndex":{index}}}'
        ).encode()
        _verify_set(key, canonical, _b64(set_b64, what, "SignedEntryTimestamp"), what)
        _check_body(_b64(body_b64, what, "Payload.body"), payload, signature, certificate, what)
        when = datetime.datetime.fromtimestamp(integrated, tz=datetime.UTC)
        if when > now + self.max_future_skew:
            raise TimestampError(
                f"{what}: the log says it was integrated at {when.isoformat()}, later than "
                f"now ({now.isoformat()}) plus {self.max_future_skew}; check the clock"
            )
        return SignedTime(when, lid, index)


def log_id(key: LogKey) -> str:
    """A log's ID: the hex SHA-256 of its public key's DER SubjectPublicKeyInfo (Rekor)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def signed_entry_timestamp_payload(
    body: bytes, integrated_time: int, log_index: int, lid: str
) -> dict[str, str | int]:
    """The ``Payload`` of a bundle (what a log signs, canonicalised), for tests and tools."""
    return {
        "body": base64.b64encode(body).decode(),
        "integratedTime": integrated_time,
        "logIndex": log_index,
        "logID": lid,
    }


def canonical_json(value: Mapping[str, object]) -> bytes:
    """RFC 8785 for the bundle payload's value types (strings, integers)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- internals ---------------------------------------------------------------


def _parse_bundle(text: str, what: str) -> tuple[str, str, int, int, str]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise TimestampError(f"{what}: the bundle is not JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("Payload"), dict):
        raise TimestampError(f"{what}: the bundle has no Payload object")
    set_b64, p = doc.get("SignedEntryTimestamp"), doc["Payload"]
    body, integrated, index, lid = (
        p.get("body"),
        p.get("integratedTime"),
        p.get("logIndex"),
        p.get("logID"),
    )
    if not isinstance(set_b64, str) or not set_b64:
        raise TimestampError(f"{what}: the bundle's SignedEntryTimestamp is missing")
    if not isinstance(body, str) or not _B64.match(body) or not body:
        raise TimestampError(f"{what}: the bundle's Payload.body is not base64")
    for name, value in (("integratedTime", integrated), ("logIndex", index)):
        if type(value) is not int or value < 0 or value >= 1 << 63:
            raise TimestampError(f"{what}: the bundle's Payload.{name} is not an integer ≥ 0")
    if not isinstance(lid, str) or not _HEX64.match(lid):
        raise TimestampError(f"{what}: the bundle's Payload.logID is not 64 lowercase hex")
    assert isinstance(integrated, int) and isinstance(index, int)
    return set_b64, body, integrated, index, lid


def _b64(text: str, what: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise TimestampError(f"{what}: the bundle's {name} is not base64") from e


def _verify_set(key: LogKey, canonical: bytes, signature: bytes, what: str) -> None:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, canonical)
        else:
            key.verify(signature, canonical, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise TimestampError(
            f"{what}: the bundle's SignedEntryTimestamp does not verify with the log's key: "
            "its time, entry or index was altered"
        ) from e


def _get(doc: object, *path: str) -> object:
    for part in path:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _check_body(
    body: bytes, payload: bytes, signature: bytes, certificate: x509.Certificate, what: str
) -> None:
    """The logged entry must be this signature, by this certificate, over this payload."""
    try:
        entry = json.loads(body)
    except ValueError as e:
        raise TimestampError(f"{what}: the logged entry is not JSON ({e})") from e
    kind, version = _get(entry, "kind"), _get(entry, "apiVersion")
    if (kind, version) != ("hashedrekord", "0.0.1"):
        raise TimestampError(
            f"{what}: the logged entry is {kind!r} {version!r}; only hashedrekord 0.0.1 "
            "(what cosign logs) is understood"
        )
    if (
        _get(entry, "spec", "data", "hash", "algorithm") != "sha256"
        or _get(entry, "spec", "data", "hash", "value") != hashlib.sha256(payload).hexdigest()
    ):
        raise TimestampError(
            f"{what}: the logged entry is for other data than this payload: the bundle "
            "belongs to another signature"
        )
    logged_sig = _get(entry, "spec", "signature", "content")
    if not isinstance(logged_sig, str) or _b64(logged_sig, what, "logged signature") != signature:
        raise TimestampError(
            f"{what}: the logged entry holds another signature: the bundle belongs to "
            "another signature"
        )
    logged_key = _get(entry, "spec", "signature", "publicKey", "content")
    if not isinstance(logged_key, str):
        raise TimestampError(f"{what}: the logged entry has no public key")
    try:
        logged_cert = x509.load_pem_x509_certificate(_b64(logged_key, what, "logged key"))
    except ValueError as e:
        raise TimestampError(
            f"{what}: the logged entry's public key is not the signing certificate"
        ) from e
    if logged_cert != certificate:
        raise TimestampError(
            f"{what}: the logged entry was made with another certificate than the one on "
            "the signature"
        )
