"""Whose signatures a module's evidence must carry: its key, or keyless by identity.

The same trust ingest verifies the artifact with (services/artifacts.py): the
module's cosign public key when it has one, else its keyless policy
(``cosign_identity_regexp`` + ``cosign_issuer_regexp``) over the platform's
certificate roots (``cosign_roots_file``) with the signing time proven by the
transparency log (``cosign_tlog_keys_file``) or, insecurely, checked at the
verification time (``cosign_insecure_ignore_tlog``). Used by the evidence API
and by ingest's referrer pull, so both verify alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from powernode.errors import ConfigError, VerificationError
from powernode.platform.db import NodeModule
from powernode.signing.errors import SigningSetupError
from powernode.signing.policy import (
    KeylessPolicy,
    PublicKeyPolicy,
    SigningTime,
    TrustPolicy,
    signing_time_from,
)


@dataclass(frozen=True)
class KeylessRoots:
    """The platform's half of keyless trust: the roots and how the signing time is proven."""

    roots_pem: bytes
    signing_time: SigningTime


def keyless_roots(
    roots_file: Path | None, tlog_keys_file: Path | None, insecure_ignore_tlog: bool
) -> KeylessRoots | None:
    """The settings' keyless roots; None when keyless trust is not configured."""
    signing_time = signing_time_from(tlog_keys_file, insecure_ignore_tlog)
    if roots_file is None or signing_time is None:
        return None
    try:
        roots = roots_file.read_bytes()
    except OSError as e:
        raise ConfigError(f"{roots_file}: cannot read the cosign roots file: {e.strerror}") from e
    return KeylessRoots(roots, signing_time)


def module_trust(module: NodeModule, keyless: KeylessRoots | None, now: datetime) -> TrustPolicy:
    """The module's trust policy; VerificationError when it cannot verify anything."""
    if module.cosign_public_key:
        try:
            return PublicKeyPolicy(module.cosign_public_key.encode())
        except SigningSetupError as e:
            raise VerificationError(f"the module's public key is unusable: {e}") from None
    if not (module.cosign_identity_regexp and module.cosign_issuer_regexp):
        raise VerificationError(f"module {module.name} has no cosign public key or keyless policy")
    if keyless is None:
        raise VerificationError(
            f"module {module.name} trusts keyless signatures, but the platform has no "
            "cosign_roots_file (and cosign_tlog_keys_file or cosign_insecure_ignore_tlog)"
        )
    try:
        return KeylessPolicy(
            keyless.roots_pem,
            module.cosign_identity_regexp,
            module.cosign_issuer_regexp,
            now,
            keyless.signing_time,
        )
    except SigningSetupError as e:
        raise VerificationError(f"the keyless trust is unusable: {e}") from None
