"""cosign-compatible signatures: keys, payloads, signing, trust policies, verification.

Pure library: it takes and returns bytes and dicts; the OCI client moves
them to and from a registry. See docs/signing.md.
"""

from powernode.signing.errors import (
    CertificateError,
    IdentityMismatchError,
    KeyFormatError,
    NoSignaturesError,
    PayloadError,
    PayloadMismatchError,
    SignatureInvalidError,
    SigningSetupError,
    TimestampError,
    WrongPassphraseError,
)
from powernode.signing.keys import (
    KeyKind,
    PrivateKey,
    PublicKey,
    ScryptParams,
    decrypt_private_key,
    encrypt_private_key,
    generate_private_key,
    key_fingerprint,
    load_public_key,
    public_key_pem,
    read_private_key,
    read_public_key,
    write_key_pair,
)
from powernode.signing.payload import (
    MEDIA_TYPE,
    SimpleSigningPayload,
    build_payload,
    parse_payload,
)
from powernode.signing.policy import (
    AnyOf,
    KeylessPolicy,
    PublicKeyPolicy,
    Signer,
    TrustPolicy,
    UnsafeValidityAtNow,
)
from powernode.signing.sign import (
    Layer,
    Signature,
    sign_manifest_digest,
    signature_from_layer,
    signature_layer,
    signature_manifest,
    signature_tag,
)
from powernode.signing.tlog import SignedTime, TransparencyLogs
from powernode.signing.verify import VerifiedSignature, verify_signatures

__all__ = [
    "MEDIA_TYPE",
    "AnyOf",
    "CertificateError",
    "IdentityMismatchError",
    "KeyFormatError",
    "KeyKind",
    "KeylessPolicy",
    "Layer",
    "NoSignaturesError",
    "PayloadError",
    "PayloadMismatchError",
    "PrivateKey",
    "PublicKey",
    "PublicKeyPolicy",
    "ScryptParams",
    "Signature",
    "SignatureInvalidError",
    "SignedTime",
    "Signer",
    "SigningSetupError",
    "SimpleSigningPayload",
    "TimestampError",
    "TransparencyLogs",
    "TrustPolicy",
    "UnsafeValidityAtNow",
    "VerifiedSignature",
    "WrongPassphraseError",
    "build_payload",
    "decrypt_private_key",
    "encrypt_private_key",
    "generate_private_key",
    "key_fingerprint",
    "load_public_key",
    "parse_payload",
    "public_key_pem",
    "read_private_key",
    "read_public_key",
    "sign_manifest_digest",
    "signature_from_layer",
    "signature_layer",
    "signature_manifest",
    "signature_tag",
    "verify_signatures",
    "write_key_pair",
]
