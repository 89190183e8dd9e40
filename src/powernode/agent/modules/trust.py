"""Trust policies as the agent receives them: from the platform, or from a file.

The platform sends each desired module's policy as it is stored on the
module's row (seed 003; ``platform/services/catalog.py`` ``TrustPolicy``)::

    {"cosign_public_key": "-----BEGIN PUBLIC KEY-----..."}
    {"cosign_identity_regexp": "https://github\\.com/acme/.*",
     "cosign_issuer_regexp": "https://token\\.actions\\.githubusercontent\\.com"}

(``public_key_pem`` / ``identity_regexp`` / ``issuer_regexp`` are accepted
too.) A policy file for ``powernode-agent modules attach --policy`` is that
JSON object, or a PEM public key (``cosign.pub``) on its own. Keyless
policies need the certificate roots the signing certificate chains to
(``cosign_roots_file`` in the agent config) and the time to check its
validity at. :func:`policy_from_doc` returns a :class:`powernode.signing`
policy or raises :class:`ConfigError` naming the field at fault: a malformed
policy is never read as "no policy".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from powernode.errors import ConfigError, PowernodeError
from powernode.signing.policy import (
    KeylessPolicy,
    PublicKeyPolicy,
    SigningTime,
    TrustPolicy,
    signing_time_from,
)

MAX_POLICY_BYTES = 256 << 10
_KEY = ("cosign_public_key", "public_key_pem")
_IDENTITY = ("cosign_identity_regexp", "identity_regexp")
_ISSUER = ("cosign_issuer_regexp", "issuer_regexp")


def _pick(doc: Mapping[str, object], names: tuple[str, ...], source: str) -> str | None:
    for name in names:
        value = doc.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: field {name!r}: expected a non-empty string")
        return value
    return None


def policy_from_doc(
    doc: object,
    *,
    source: str,
    roots_pem: bytes | None = None,
    now: datetime | None = None,
    signing_time: SigningTime | None = None,
) -> TrustPolicy:
    """The signing policy ``doc`` describes; ConfigError (naming ``source``) if it is not one.

    A keyless policy checks the certificate at the time ``signing_time`` proves
    (a transparency log's signed entry timestamp, issue 13 item 10); without one
    keyless trust is refused, unless the operator chose ``UnsafeValidityAtNow``
    (``cosign_insecure_ignore_tlog``)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: a trust policy must be a JSON object")
    known = set(_KEY + _IDENTITY + _ISSUER)
    unknown = sorted(str(k) for k in doc if k not in known and doc[k] is not None)
    if unknown:
        raise ConfigError(
            f"{source}: unknown trust policy field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    key = _pick(doc, _KEY, source)
    identity, issuer = _pick(doc, _IDENTITY, source), _pick(doc, _ISSUER, source)
    try:
        if key is not None:
            return PublicKeyPolicy(key.encode())
        if identity is not None and issuer is not None and roots_pem is not None:
            if signing_time is None:
                raise ConfigError(
                    "keyless trust needs the transparency log's public key to prove when "
                    "the signature was made (Fulcio's certificates live 10 minutes): set "
                    "cosign_tlog_keys_file, or cosign_insecure_ignore_tlog = true to check "
                    "certificates at the current time"
                )
            when = now or datetime.now(UTC)
            return KeylessPolicy(roots_pem, identity, issuer, when, signing_time)
    except PowernodeError as e:  # a bad key, regexp or roots: say where they came from
        raise ConfigError(f"{source}: {e}") from e
    if identity is None and issuer is None:
        raise ConfigError(
            f"{source}: the trust policy is empty: give cosign_public_key, or "
            "cosign_identity_regexp and cosign_issuer_regexp"
        )
    if identity is None or issuer is None:
        missing = "cosign_identity_regexp" if identity is None else "cosign_issuer_regexp"
        raise ConfigError(f"{source}: keyless trust needs {missing} too")
    raise ConfigError(
        f"{source}: keyless trust (identity/issuer) needs the certificate roots: "
        "set cosign_roots_file in the agent config"
    )


def load_policy_file(
    path: Path,
    *,
    roots_pem: bytes | None = None,
    now: datetime | None = None,
    signing_time: SigningTime | None = None,
) -> TrustPolicy:
    """A policy file: a JSON object (see the module docstring) or a PEM public key."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the trust policy: {e.strerror}") from e
    if len(raw) > MAX_POLICY_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_POLICY_BYTES} bytes; not a trust policy")
    if raw.lstrip().startswith(b"-----BEGIN"):
        return policy_from_doc(
            {"cosign_public_key": raw.decode(errors="replace")}, source=str(path)
        )
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{path}: neither a PEM public key nor a JSON trust policy ({e})") from e
    return policy_from_doc(
        doc, source=str(path), roots_pem=roots_pem, now=now, signing_time=signing_time
    )


@dataclass(frozen=True)
class PolicyReader:
    """Turns the platform's policy documents into signing policies (roots and clock injected)."""

    roots_pem: bytes | None = None
    clock: Callable[[], datetime] | None = None
    signing_time: SigningTime | None = None

    def __call__(self, doc: object, source: str) -> TrustPolicy:
        now = self.clock() if self.clock is not None else None
        return policy_from_doc(
            doc, source=source, roots_pem=self.roots_pem, now=now, signing_time=self.signing_time
        )

    @classmethod
    def from_file(
        cls,
        roots_file: Path | None,
        tlog_keys_file: Path | None = None,
        *,
        insecure_ignore_tlog: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> PolicyReader:
        """From the agent's config: ``cosign_roots_file``, ``cosign_tlog_keys_file`` and
        ``cosign_insecure_ignore_tlog``."""
        return cls(
            _read(roots_file, "cosign roots") if roots_file is not None else None,
            clock,
            signing_time_from(tlog_keys_file, insecure_ignore_tlog),
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what}: {e.strerror}") from e
