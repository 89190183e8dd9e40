"""The signature schemes cosign uses over a payload's bytes.

cosign ``specs/SIGNATURE_SPEC.md`` ("Signature"): ECDSA P-256 with SHA-256,
the signature ASN.1 DER-encoded; Ed25519 signs the payload itself (pure
Ed25519, RFC 8032). The annotation carries the signature base64-encoded.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from powernode.signing.errors import SignatureInvalidError
from powernode.signing.keys import PrivateKey, PublicKey, check_key_type, key_fingerprint


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """The raw signature over ``data``: DER ECDSA-SHA256, or 64-byte Ed25519."""
    check_key_type(key, "signing key")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: PublicKey, data: bytes, signature: bytes, *, what: str) -> None:
    """Return if ``signature`` over ``data`` verifies with ``key``; raise otherwise."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise SignatureInvalidError(
            f"{what} does not verify with key {key_fingerprint(key)}: it was made by another "
            "key, or the payload or signature was altered"
        ) from e
