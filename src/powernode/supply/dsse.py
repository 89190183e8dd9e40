"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1).

The signature is over PAE(payloadType, payload) = ``"DSSEv1" SP len(type) SP
type SP len(body) SP body`` (lengths as ASCII decimal), made with the
project's cosign-compatible keys (signing/scheme.py: ECDSA P-256 SHA-256 DER,
or Ed25519). This is the envelope cosign's ``attest`` writes and
``verify-attestation`` reads: ``payloadType`` ``application/vnd.in-toto+json``,
``signatures[].sig`` base64, ``keyid`` empty.

Verification goes through a :class:`powernode.signing.policy.TrustPolicy`
(public key or keyless): the candidate's "payload" is the PAE bytes, so a key
or a certificate that signs cosign's simple-signing payloads checks DSSE the
same way.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from powernode.errors import DataError, VerificationError
from powernode.signing.errors import SignatureInvalidError
from powernode.signing.keys import PrivateKey
from powernode.signing.policy import SignatureCandidate, Signer, TrustPolicy
from powernode.signing.scheme import sign_bytes

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
OPENVEX_PAYLOAD_TYPE = "application/vnd.openvex+json"
ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
MAX_ENVELOPE = 8 * 1024 * 1024


class EnvelopeError(DataError, ValueError):
    """The envelope is not a DSSE envelope (shape, base64, JSON)."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of ``payload``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, raw signature)

    def to_json(self) -> dict[str, object]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [
                {"keyid": keyid, "sig": base64.b64encode(sig).decode()}
                for keyid, sig in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def payload_json(self) -> dict[str, object]:
        try:
            doc = json.loads(self.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EnvelopeError(f"the envelope's payload is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise EnvelopeError("the envelope's payload is not a JSON object")
        return doc


def sign(payload_type: str, payload: bytes, key: PrivateKey, *, keyid: str = "") -> Envelope:
    return Envelope(payload_type, payload, ((keyid, sign_bytes(key, pae(payload_type, payload))),))


def parse(document: object) -> Envelope:
    """An :class:`Envelope` from its JSON (bytes, str or parsed); EnvelopeError if malformed."""
    if isinstance(document, bytes | str):
        if len(document) > MAX_ENVELOPE:
            raise EnvelopeError(f"the envelope is over {MAX_ENVELOPE} bytes")
        try:
            document = json.loads(document)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EnvelopeError(f"the envelope is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise EnvelopeError("a DSSE envelope is a JSON object")
    ptype, payload, sigs = (
        document.get("payloadType"),
        document.get("payload"),
        document.get("signatures", []),
    )
    if not isinstance(ptype, str) or not ptype:
        raise EnvelopeError("the envelope has no payloadType")
    if not isinstance(payload, str):
        raise EnvelopeError("the envelope has no payload (base64 string)")
    if not isinstance(sigs, list):
        raise EnvelopeError("the envelope's signatures is not a list")
    out: list[tuple[str, bytes]] = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or not isinstance(s.get("sig"), str):
            raise EnvelopeError(f"signatures[{i}] has no sig (base64 string)")
        keyid = s.get("keyid") or ""
        if not isinstance(keyid, str):
            raise EnvelopeError(f"signatures[{i}].keyid is not a string")
        out.append((keyid, _b64(s["sig"], f"signatures[{i}].sig")))
    return Envelope(ptype, _b64(payload, "payload"), tuple(out))


def verify(
    envelope: Envelope,
    policy: TrustPolicy,
    *,
    certificate_pem: bytes | None = None,
    chain_pem: bytes | None = None,
    bundle: str | None = None,
) -> Signer:
    """The first signer ``policy`` trusts; SignatureInvalidError when none verifies.

    An envelope without signatures is refused like one whose signatures fail:
    unsigned evidence is no evidence.
    """
    if not envelope.signatures:
        raise SignatureInvalidError("the envelope is not signed (no signatures)")
    data = pae(envelope.payload_type, envelope.payload)
    errors: list[str] = []
    n = len(envelope.signatures)
    for i, (_keyid, sig) in enumerate(envelope.signatures, 1):
        candidate = SignatureCandidate(
            f"envelope signature {i} of {n}", data, sig, certificate_pem, chain_pem, bundle
        )
        try:
            return policy.verify(candidate)
        except VerificationError as e:
            errors.append(str(e))
    raise SignatureInvalidError(
        f"no signature of the envelope is trusted by {policy.describe()}: " + "; ".join(errors)
    )


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not base64") from None
