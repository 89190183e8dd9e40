"""Sealing secrets at rest (module webhook secrets) with the platform key.

A webhook secret must be available in clear to verify the HMAC of Gitea's
build-completion webhook (seed 004), so a one-way hash will not do: it is
sealed with AES-256-GCM under a 32-byte key kept in ``secret_key_file``
(0600, created on first use with an atomic write). The module id is the
associated data, so a sealed value copied onto another row does not open.

Sealed form: ``v1.<base64url(nonce || ciphertext+tag)>``.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from powernode.durable import create_once
from powernode.errors import ConfigError, VerificationError

log = logging.getLogger(__name__)

KEY_BYTES = 32
_NONCE_BYTES = 12
_PREFIX = "v1."


class Sealer:
    """Seals and opens short secrets bound to an owner id."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"platform secret key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, owner_id: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        ct = self._aead.encrypt(nonce, plaintext.encode(), owner_id.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + ct).decode()

    def open(self, sealed: str, owner_id: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise VerificationError(f"sealed secret of {owner_id}: unknown format")
        raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :])
        try:
            pt = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], owner_id.encode())
        except InvalidTag as e:
            raise VerificationError(
                f"sealed secret of {owner_id} does not open: wrong platform key or "
                "the value was moved from another row"
            ) from e
        return pt.decode()


def load_or_create_key(path: Path) -> bytes:
    """Read the key at ``path``, creating it (0600, atomic) when missing."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        # first writer wins: a platform starting beside us keeps its key, and so do we
        if create_once(path, secrets.token_bytes(KEY_BYTES), mode=0o600):
            log.info("created platform secret key %s", path)
        key = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the platform secret key: {e.strerror}") from e
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{path}: platform secret key is {len(key)} bytes, expected {KEY_BYTES}; "
            "restore it from backup (sealed webhook secrets need the same key)"
        )
    return key
