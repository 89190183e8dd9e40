"""Signing keys in cosign's formats.

Private key: a PEM block ``ENCRYPTED COSIGN PRIVATE KEY`` (cosign ≥ 2 writes
``ENCRYPTED SIGSTORE PRIVATE KEY``; both are read) whose body is base64 of a
JSON document (sigstore ``pkg/cryptoutils`` / cosign ``pkg/cosign/keys.go``)::

    {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1},
             "salt": "<base64, 32 bytes>"},
     "cipher": {"name": "nacl/secretbox", "nonce": "<base64, 24 bytes>"},
     "ciphertext": "<base64>"}

The 32-byte secretbox key is scrypt(passphrase, salt, N, r, p); the plaintext
is the DER private key (PKCS#8). Public key: a plain ``PUBLIC KEY`` PEM
(SubjectPublicKeyInfo). Signing keys are ECDSA P-256 or Ed25519.

The key derivation uses ``cryptography``'s scrypt and the cipher PyNaCl's
``SecretBox`` (XSalsa20-Poly1305); nothing cryptographic is written here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from powernode.durable import write_bytes
from powernode.signing.errors import KeyFormatError, SigningSetupError, WrongPassphraseError

log = logging.getLogger(__name__)

KeyKind = Literal["ecdsa-p256", "ed25519"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
ACCEPTED_PEM_TYPES = ("ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY")

# A cosign key file is ~650 bytes; anything much larger is not one.
MAX_KEY_FILE_SIZE = 64 << 10
# scrypt cost limits for files we read: cosign writes N=32768 (old) or 65536,
# r=8, p=1. Memory is 128·N·r bytes; the cap keeps a hostile file from asking
# for gigabytes.
_MIN_N, _MAX_N = 1 << 10, 1 << 20
_MAX_SCRYPT_MEMORY = 256 << 20
_SALT_SIZE = 32
_NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters; the default is what cosign writes today."""

    n: int = 65536
    r: int = 8
    p: int = 1


def generate_private_key(kind: KeyKind = "ecdsa-p256") -> PrivateKey:
    """A new ECDSA P-256 (cosign's default) or Ed25519 private key."""
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise SigningSetupError(f"unknown key kind {kind!r}: use 'ecdsa-p256' or 'ed25519'")


def check_key_type(key: object, what: str) -> None:
    """Raise :class:`KeyFormatError` unless ``key`` is ECDSA P-256 or Ed25519."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return
        raise KeyFormatError(
            f"{what}: ECDSA key on curve {key.curve.name}; powernode signs and verifies with "
            "ECDSA P-256 or Ed25519 keys (generate one with `powernode module keygen`)"
        )
    raise KeyFormatError(
        f"{what}: {type(key).__name__.lstrip('_')} keys are not supported; "
        "powernode uses ECDSA P-256 or Ed25519 keys"
    )


def encrypt_private_key(
    key: PrivateKey,
    passphrase: str | bytes,
    *,
    params: ScryptParams = ScryptParams(),
    randbytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """The key as cosign's encrypted PEM (``ENCRYPTED COSIGN PRIVATE KEY``)."""
    check_key_type(key, "private key")
    _check_scrypt(params, "scrypt parameters")
    salt = randbytes(_SALT_SIZE)
    nonce = randbytes(_NONCE_SIZE)
    plaintext = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    box = nacl.secret.SecretBox(_derive(passphrase, salt, params))
    ciphertext = box.encrypt(plaintext, nonce).ciphertext
    document = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": params.n, "r": params.r, "p": params.p},
            "salt": _b64(salt),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(ciphertext),
    }
    body = base64.b64encode(json.dumps(document, separators=(",", ":")).encode())
    return _pem(PEM_TYPE, body)


def decrypt_private_key(
    data: bytes, passphrase: str | bytes, *, source: str = "<private key>"
) -> PrivateKey:
    """Read cosign's encrypted private key PEM; ``source`` names it in errors."""
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyFormatError(
            f"{source}: {len(data)} bytes is too large for a cosign private key "
            f"(limit {MAX_KEY_FILE_SIZE})"
        )
    body = _pem_body(data, ACCEPTED_PEM_TYPES, source)
    try:
        document = json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError, RecursionError) as e:
        raise KeyFormatError(f"{source}: the PEM body is not base64 of a JSON document") from e
    salt, nonce, ciphertext, params = _parse_envelope(document, source)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, params))
    try:
        plaintext = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as e:
        # Poly1305 authenticates the ciphertext, so a wrong passphrase (or a
        # corrupted file) is detected here and never yields a bogus key.
        raise WrongPassphraseError(
            f"wrong passphrase for {source}: the key could not be decrypted; "
            "give the passphrase the key was created with"
        ) from e
    try:
        key = serialization.load_der_private_key(plaintext, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFormatError(f"{source}: the decrypted key is not a DER private key") from e
    check_key_type(key, source)
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    return key


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    """The public half as a ``PUBLIC KEY`` PEM, the format of ``cosign.pub``."""
    public = (
        key.public_key()
        if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
        else key
    )
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes, *, source: str = "<public key>") -> PublicKey:
    """Parse a ``PUBLIC KEY`` PEM holding an ECDSA P-256 or Ed25519 key."""
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyFormatError(f"{source}: {len(data)} bytes is too large for a public key")
    _pem_body(data, ("PUBLIC KEY",), source)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFormatError(f"{source}: not a valid PUBLIC KEY PEM ({e})") from e
    check_key_type(key, source)
    assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    return key


def key_fingerprint(key: PrivateKey | PublicKey) -> str:
    """``SHA256:<hex>`` of the DER SubjectPublicKeyInfo: how messages name a key."""
    public = (
        key.public_key()
        if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
        else key
    )
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + hashlib.sha256(der).hexdigest()[:16]


def write_key_pair(
    private_path: Path,
    public_path: Path,
    key: PrivateKey,
    passphrase: str | bytes,
    *,
    overwrite: bool = False,
    params: ScryptParams = ScryptParams(),
) -> None:
    """Write ``cosign.key`` (mode 0600) and ``cosign.pub`` atomically.

    Refuses to replace existing files unless ``overwrite``: a lost private key
    cannot be recovered.
    """
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise SigningSetupError(
                    f"{path} already exists; remove it or ask for overwrite to replace it"
                )
    encrypted = encrypt_private_key(key, passphrase, params=params)
    write_bytes(private_path, encrypted, mode=0o600)
    write_bytes(public_path, public_key_pem(key), mode=0o644)
    log.info("wrote key pair %s, %s (%s)", private_path, public_path, key_fingerprint(key))


def read_private_key(path: Path, passphrase: str | bytes) -> PrivateKey:
    """Read and decrypt a cosign private key file."""
    return decrypt_private_key(_read_limited(path), passphrase, source=str(path))


def read_public_key(path: Path) -> PublicKey:
    """Read a ``cosign.pub``-style public key file."""
    return load_public_key(_read_limited(path), source=str(path))


# -- internals ---------------------------------------------------------------


def _parse_envelope(document: object, source: str) -> tuple[bytes, bytes, bytes, ScryptParams]:
    def field(obj: object, name: str, path: str) -> object:
        if not isinstance(obj, dict) or name not in obj:
            raise KeyFormatError(f"{source}: field {path} is missing from the key envelope")
        return obj[name]

    def text(obj: object, name: str, path: str) -> str:
        value = field(obj, name, path)
        if not isinstance(value, str):
            raise KeyFormatError(f"{source}: field {path} must be a string")
        return value

    def number(obj: object, name: str, path: str) -> int:
        value = field(obj, name, path)
        if not isinstance(value, int) or isinstance(value, bool):
            raise KeyFormatError(f"{source}: field {path} must be an integer")
        return value

    def blob(obj: object, name: str, path: str) -> bytes:
        try:
            return base64.b64decode(text(obj, name, path), validate=True)
        except binascii.Error as e:
            raise KeyFormatError(f"{source}: field {path} is not valid base64") from e

    kdf = field(document, "kdf", "kdf")
    cipher = field(document, "cipher", "cipher")
    if (name := text(kdf, "name", "kdf.name")) != "scrypt":
        raise KeyFormatError(f"{source}: kdf.name is {name!r}; cosign keys use 'scrypt'")
    if (name := text(cipher, "name", "cipher.name")) != "nacl/secretbox":
        raise KeyFormatError(f"{source}: cipher.name is {name!r}; cosign keys use 'nacl/secretbox'")
    raw = field(kdf, "params", "kdf.params")
    params = ScryptParams(
        n=number(raw, "N", "kdf.params.N"),
        r=number(raw, "r", "kdf.params.r"),
        p=number(raw, "p", "kdf.params.p"),
    )
    _check_scrypt(params, f"{source}: kdf.params")
    salt = blob(kdf, "salt", "kdf.salt")
    if not 16 <= len(salt) <= 64:
        raise KeyFormatError(f"{source}: kdf.salt is {len(salt)} bytes; expected 16 to 64")
    nonce = blob(cipher, "nonce", "cipher.nonce")
    if len(nonce) != _NONCE_SIZE:
        raise KeyFormatError(
            f"{source}: cipher.nonce is {len(nonce)} bytes; nacl/secretbox needs {_NONCE_SIZE}"
        )
    ciphertext = blob(document, "ciphertext", "ciphertext")
    return salt, nonce, ciphertext, params


def _check_scrypt(params: ScryptParams, what: str) -> None:
    n, r, p = params.n, params.r, params.p
    ok = (
        _MIN_N <= n <= _MAX_N
        and n & (n - 1) == 0
        and 1 <= r <= 32
        and 1 <= p <= 16
        and 128 * n * r <= _MAX_SCRYPT_MEMORY
    )
    if not ok:
        raise KeyFormatError(
            f"{what}: scrypt N={n} r={r} p={p} is outside the accepted range "
            f"(N a power of two in [{_MIN_N}, {_MAX_N}], r ≤ 32, p ≤ 16, "
            f"memory 128·N·r ≤ {_MAX_SCRYPT_MEMORY >> 20} MiB)"
        )


def _derive(passphrase: str | bytes, salt: bytes, params: ScryptParams) -> bytes:
    secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
    kdf = Scrypt(
        salt=salt, length=nacl.secret.SecretBox.KEY_SIZE, n=params.n, r=params.r, p=params.p
    )
    return kdf.derive(secret)


def _pem_body(data: bytes, types: tuple[str, ...], source: str) -> bytes:
    """The base64 body of the one PEM block in ``data``, whose type is in ``types``."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise KeyFormatError(f"{source}: not a PEM file (non-ASCII bytes)") from e
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 2 or not lines[0].startswith("-----BEGIN ") or not lines[0].endswith("-----"):
        raise KeyFormatError(f"{source}: not a PEM file; expected -----BEGIN {types[0]}-----")
    kind = lines[0][len("-----BEGIN ") : -len("-----")]
    if kind not in types:
        raise KeyFormatError(
            f"{source}: PEM block is {kind!r}; expected {' or '.join(repr(t) for t in types)}"
        )
    if lines[-1] != f"-----END {kind}-----":
        raise KeyFormatError(f"{source}: PEM block {kind!r} has no matching END line")
    return "".join(lines[1:-1]).encode()


def _pem(kind: str, body: bytes) -> bytes:
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join(
        [f"-----BEGIN {kind}-----".encode(), *lines, f"-----END {kind}-----".encode(), b""]
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_SIZE + 1)
    except FileNotFoundError as e:
        raise SigningSetupError(f"{path}: no such key file") from e
    except OSError as e:
        raise SigningSetupError(f"{path}: cannot read key file: {e.strerror}") from e
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyFormatError(f"{path}: larger than {MAX_KEY_FILE_SIZE} bytes; not a key file")
    return data
