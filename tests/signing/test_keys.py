"""Keys in cosign's encrypted PEM format: round trips, interop vectors, bad inputs."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from nacl.secret import SecretBox

from powernode.signing import (
    KeyFormatError,
    ScryptParams,
    SigningSetupError,
    WrongPassphraseError,
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

VECTORS = Path(__file__).parent / "vectors"
FAST = ScryptParams(n=1024, r=8, p=1)  # the cheapest cost we accept: keeps tests quick


def spki_b64(key: object) -> str:
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def envelope(plaintext: bytes, passphrase: bytes, **overrides: object) -> bytes:
    """A cosign key envelope around arbitrary plaintext, fields overridable."""
    salt, nonce = os.urandom(32), os.urandom(24)
    key = Scrypt(salt=salt, length=32, n=1024, r=8, p=1).derive(passphrase)
    ciphertext = SecretBox(key).encrypt(plaintext, nonce).ciphertext
    doc: dict[str, object] = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": 1024, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    doc.update(overrides)
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    kind = "ENCRYPTED COSIGN PRIVATE KEY"
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n".encode()


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_round_trip(kind: str) -> None:
    key = generate_private_key(kind)  # type: ignore[arg-type]
    pem = encrypt_private_key(key, "correct horse", params=FAST)
    assert pem.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert all(len(line) <= 64 for line in pem.splitlines())
    again = decrypt_private_key(pem, b"correct horse")
    assert spki_b64(again) == spki_b64(key)
    assert type(again) is type(key)


def test_default_params_are_cosigns() -> None:
    key = generate_private_key()
    pem = encrypt_private_key(key, "")
    body = b"".join(pem.splitlines()[1:-1])
    doc = json.loads(base64.b64decode(body))
    assert doc["kdf"]["name"] == "scrypt"
    assert doc["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    assert spki_b64(decrypt_private_key(pem, "")) == spki_b64(key)


def test_wrong_passphrase() -> None:
    pem = encrypt_private_key(generate_private_key(), "right", params=FAST)
    with pytest.raises(WrongPassphraseError) as e:
        decrypt_private_key(pem, "wrong", source="ci/cosign.key")
    assert str(e.value).startswith(
        "wrong passphrase for ci/cosign.key: the key could not be decrypted"
    )


# -- interop: keys written by cosign (vectors/README.md) -------------------------

COSIGN_VECTORS = {
    "pemcosignkey.key": (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAECYtspttZZ7e9PMd8wyU2CWDl"
        "pEXNbqTve0ZBuOXu9xTjtm7Z107cVLCCk96Ma4D0tesnKeCPwrcspLz7GNZJ"
        "Sw=="
    ),
    "pemcosigneckey.key": (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+9E3Qe+h25ofmz3Uo2T004Df"
        "y49iX06MMbxf9rsGmLkOPrS0KYDl1QMfFuSbrtf8wTWNT9HNxrW/Foz39mDh"
        "Hw=="
    ),
    "pemsigstorekey.key": (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE7z9gA/tqa9iHt/f9F3ulyVi4"
        "lwqULfHWfhG2mK4eyJ8LDcLstb+VVhxj3pkMjc3fNo+sSfiIY2NLR7c+DG1V"
        "4w=="
    ),
}


@pytest.mark.parametrize("name", sorted(COSIGN_VECTORS))
def test_cosign_written_keys_decrypt(name: str) -> None:
    key = read_private_key(VECTORS / "cosign" / name, "hello")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert spki_b64(key) == COSIGN_VECTORS[name]


def test_cosign_written_key_wrong_passphrase() -> None:
    path = VECTORS / "cosign" / "pemsigstorekey.key"
    with pytest.raises(
        WrongPassphraseError, match=f"wrong passphrase for {path}: the key could not be decrypted"
    ):
        read_private_key(path, "hello!")


# -- files -------------------------------------------------------------------


def test_write_key_pair(tmp_path: Path) -> None:
    key = generate_private_key("ed25519")
    priv, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    write_key_pair(priv, pub, key, "pw", params=FAST)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cosign.key", "cosign.pub"]
    assert spki_b64(read_private_key(priv, "pw")) == spki_b64(key)
    assert key_fingerprint(read_public_key(pub)) == key_fingerprint(key)
    assert pub.read_bytes() == public_key_pem(key)


def test_write_key_pair_refuses_to_overwrite(tmp_path: Path) -> None:
    priv, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    pub.write_bytes(b"keep me")
    with pytest.raises(SigningSetupError, match=r"cosign.pub already exists"):
        write_key_pair(priv, pub, generate_private_key(), "pw", params=FAST)
    assert pub.read_bytes() == b"keep me"
    assert not priv.exists()


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(SigningSetupError, match=r"nope.key: no such key file"):
        read_private_key(tmp_path / "nope.key", "pw")


# -- malformed key files -----------------------------------------------------------

P384_PKCS8 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
P256_PKCS8 = generate_private_key().private_bytes(  # type: ignore[union-attr]
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"hello", "not a PEM file", id="not-pem"),
        pytest.param(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "PEM block is 'PRIVATE KEY'; expected 'ENCRYPTED COSIGN PRIVATE KEY' or "
            "'ENCRYPTED SIGSTORE PRIVATE KEY'",
            id="unencrypted-pem",
        ),
        pytest.param(
            b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n!!!\n"
            b"-----END ENCRYPTED COSIGN PRIVATE KEY-----\n",
            "not base64 of a JSON document",
            id="bad-base64",
        ),
        pytest.param(
            envelope(P256_PKCS8, b"pw", kdf={"name": "argon2", "params": {}, "salt": ""}),
            "kdf.name is 'argon2'; cosign keys use 'scrypt'",
            id="kdf-name",
        ),
        pytest.param(
            envelope(P256_PKCS8, b"pw", cipher={"name": "nacl/secretbox", "nonce": "AAAA"}),
            "cipher.nonce is 3 bytes; nacl/secretbox needs 24",
            id="nonce-size",
        ),
        pytest.param(
            envelope(
                P256_PKCS8,
                b"pw",
                kdf={"name": "scrypt", "params": {"N": 1 << 22, "r": 8, "p": 1}, "salt": "AAAA"},
            ),
            "scrypt N=4194304 r=8 p=1 is outside the accepted range",
            id="scrypt-too-costly",
        ),
        pytest.param(
            envelope(P256_PKCS8, b"pw", ciphertext=7),
            "field ciphertext must be a string",
            id="ciphertext-type",
        ),
        pytest.param(envelope(P384_PKCS8, b"pw"), "ECDSA key on curve secp384r1", id="p384"),
        pytest.param(
            envelope(b"not der", b"pw"), "the decrypted key is not a DER private key", id="not-der"
        ),
        pytest.param(b"x" * (65 << 10), "too large for a cosign private key", id="too-large"),
    ],
)
def test_malformed_private_key(data: bytes, message: str) -> None:
    with pytest.raises(KeyFormatError) as e:
        decrypt_private_key(data, "pw", source="k.key")
    assert message in str(e.value)
    assert str(e.value).startswith("k.key")


def test_public_key_errors() -> None:
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFormatError, match=r"^cosign.pub: ECDSA key on curve secp384r1"):
        load_public_key(p384, source="cosign.pub")
    with pytest.raises(KeyFormatError, match=r"^cosign.pub: PEM block is 'CERTIFICATE'"):
        load_public_key(
            b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n", source="cosign.pub"
        )


def test_encrypt_rejects_unsupported_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyFormatError, match="ECDSA key on curve secp384r1"):
        encrypt_private_key(key, "pw", params=FAST)  # type: ignore[arg-type]


def test_wrong_passphrase_changes_nothing(tmp_path: Path) -> None:
    priv, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    write_key_pair(priv, pub, generate_private_key(), "right", params=FAST)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(WrongPassphraseError, match=f"^wrong passphrase for {priv}: "):
        read_private_key(priv, "wrong")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
