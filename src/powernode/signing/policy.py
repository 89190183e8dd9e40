"""Trust policies: who may sign. Required arguments to every verification.

A policy decides whether one signature was made by a trusted signer and
returns that signer, or raises a :class:`VerificationError` subclass that
says why not (sigstore-python ``verify/policy.py`` is the model):

- :class:`PublicKeyPolicy` — made with the private half of one public key
  (``cosign verify --key``); certificates on the signature are ignored.
- :class:`KeylessPolicy` — made with the key of a certificate that chains to
  one of the configured roots, was valid when the signature was made,
  allows code signing, and whose identity (SAN URI or email) and OIDC issuer
  fully match the regular expressions (``cosign verify
  --certificate-identity-regexp --certificate-oidc-issuer-regexp``, with
  ``--certificate-chain`` roots). When the signature was made is proven by a
  transparency log's signed entry timestamp (:class:`TransparencyLogs`,
  ``signing/tlog.py``), never taken from the verifier's clock: Fulcio's
  certificates live 10 minutes. :class:`UnsafeValidityAtNow` is the named
  opt-out (a private CA with long-lived certificates and no log).
- :class:`AnyOf` — the first of several policies that accepts (key rotation).

Regular expressions must match the whole string (``re.fullmatch``); cosign
searches, so an unanchored cosign pattern is stricter here, never looser.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from powernode.errors import ConfigError, PowernodeError, VerificationError
from powernode.signing import certs
from powernode.signing.errors import (
    CertificateError,
    IdentityMismatchError,
    KeyFormatError,
    SigningSetupError,
)
from powernode.signing.keys import PublicKey, check_key_type, key_fingerprint, load_public_key
from powernode.signing.scheme import verify_bytes
from powernode.signing.tlog import SignedTime, TransparencyLogs


@dataclass(frozen=True)
class SignatureCandidate:
    """One signature as found on the artifact, not yet trusted."""

    position: str  # "signature 2 of 3", for messages
    payload: bytes
    signature: bytes
    certificate_pem: bytes | None
    chain_pem: bytes | None
    bundle: str | None = None  # dev.sigstore.cosign/bundle: the log's proof of the time


@dataclass(frozen=True)
class Signer:
    """Who made a verified signature."""

    key_fingerprint: str
    identity: str | None = None
    issuer: str | None = None
    certificate: x509.Certificate | None = field(default=None, compare=False)
    signed_at: SignedTime | None = None  # the proven signing time (keyless with a log)

    def __str__(self) -> str:
        if self.identity is None:
            return f"key {self.key_fingerprint}"
        return f"{self.identity} (issuer {self.issuer}, key {self.key_fingerprint})"


class TrustPolicy(Protocol):
    """What :func:`powernode.signing.verify.verify_signatures` needs of a policy."""

    def verify(self, candidate: SignatureCandidate) -> Signer:
        """The signer of ``candidate`` if trusted; raise VerificationError otherwise."""
        ...

    def describe(self) -> str:
        """A short description for error messages."""
        ...


@dataclass(frozen=True)
class PublicKeyPolicy:
    """Trust signatures made by the key whose public half is ``public_key_pem``."""

    public_key_pem: bytes
    _key: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            key = load_public_key(self.public_key_pem, source="policy public key")
        except KeyFormatError as e:
            raise SigningSetupError(str(e)) from e
        object.__setattr__(self, "_key", key)

    def verify(self, candidate: SignatureCandidate) -> Signer:
        verify_bytes(self._key, candidate.payload, candidate.signature, what=candidate.position)
        return Signer(key_fingerprint(self._key))

    def describe(self) -> str:
        return f"public key {key_fingerprint(self._key)}"


@dataclass(frozen=True)
class UnsafeValidityAtNow:
    """Check the certificate chain at the verification time, with no proof of the
    signing time. Unsafe with Fulcio (a signature stops verifying 10 minutes after it
    was made, and a stolen expired key signs "now" undetected by nothing but expiry);
    for a private CA issuing long-lived certificates without a transparency log."""

    def describe(self) -> str:
        return "certificates checked at verification time (unsafe: no signed timestamp)"


SigningTime = TransparencyLogs | UnsafeValidityAtNow


@dataclass(frozen=True)
class KeylessPolicy:
    """Trust signatures whose certificate chains to ``roots_pem`` and matches the regexps.

    ``signing_time`` (required) says how the time the certificate must have been
    valid at is established: :class:`TransparencyLogs` — the signature's bundle
    must carry a signed entry timestamp of one of those logs for this very
    signature, not later than ``now`` plus the allowed skew, and the whole chain
    must be valid at that time; or :class:`UnsafeValidityAtNow` — at ``now``.
    ``now`` is the verifier's clock.
    """

    roots_pem: bytes
    identity_regexp: str
    issuer_regexp: str
    now: datetime.datetime
    signing_time: SigningTime
    _roots: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)
    _identity: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _issuer: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise SigningSetupError("KeylessPolicy.now must be timezone-aware (e.g. UTC)")
        if not isinstance(self.signing_time, TransparencyLogs | UnsafeValidityAtNow):
            raise SigningSetupError(
                "KeylessPolicy.signing_time must be TransparencyLogs(public keys) or "
                "UnsafeValidityAtNow()"
            )
        if not self.roots_pem.strip():
            raise SigningSetupError("a keyless policy needs at least one root certificate (PEM)")
        try:
            roots = certs.load_certificates(self.roots_pem, "configured roots")
        except CertificateError as e:
            raise SigningSetupError(str(e)) from e
        if not roots:
            raise SigningSetupError("a keyless policy needs at least one root certificate (PEM)")
        object.__setattr__(self, "_roots", tuple(roots))
        object.__setattr__(self, "_identity", _compile(self.identity_regexp, "identity"))
        object.__setattr__(self, "_issuer", _compile(self.issuer_regexp, "issuer"))

    def verify(self, candidate: SignatureCandidate) -> Signer:
        where = candidate.position
        if candidate.certificate_pem is None:
            raise CertificateError(
                f"{where} carries no certificate (annotation dev.sigstore.cosign/certificate); "
                "a keyless policy accepts only certificate signatures — was it signed with a key?"
            )
        leaf = certs.load_certificate(candidate.certificate_pem, f"{where}: certificate")
        chain = (
            certs.load_certificates(candidate.chain_pem, f"{where}: certificate chain")
            if candidate.chain_pem is not None
            else []
        )
        signed_at: SignedTime | None = None
        at = self.now
        if isinstance(self.signing_time, TransparencyLogs):
            # The bundle proves the time only together with the certificate; the chain
            # and the signature are checked below, so a forged bundle gains nothing.
            signed_at = self.signing_time.verify_bundle(
                candidate.bundle,
                payload=candidate.payload,
                signature=candidate.signature,
                certificate=leaf,
                now=self.now,
                what=where,
            )
            at = signed_at.time
        try:
            certs.verify_chain(leaf, chain, self._roots, at)
        except CertificateError as e:
            when = f" at the signing time {signed_at}" if signed_at else ""
            raise CertificateError(f"{where}{when}: {e}") from e
        identities = certs.certificate_identities(leaf)
        if not identities:
            raise IdentityMismatchError(
                f"{where}: the certificate has no SAN URI or email identity to match "
                f"`{self.identity_regexp}`"
            )
        identity = next((i for i in identities if self._identity.fullmatch(i)), None)
        if identity is None:
            shown = ", ".join(f"`{i}`" for i in identities)
            raise IdentityMismatchError(
                f"{where}: identity {shown} does not match `{self.identity_regexp}`"
            )
        issuer = certs.certificate_issuer(leaf)
        if issuer is None:
            raise IdentityMismatchError(
                f"{where}: the certificate has no OIDC issuer extension "
                f"(1.3.6.1.4.1.57264.1.8 or .1.1) to match `{self.issuer_regexp}`"
            )
        if self._issuer.fullmatch(issuer) is None:
            raise IdentityMismatchError(
                f"{where}: issuer `{issuer}` does not match `{self.issuer_regexp}`"
            )
        key = leaf.public_key()
        try:
            check_key_type(key, f"{where}: certificate key")
        except KeyFormatError as e:
            raise CertificateError(str(e)) from e
        assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
        verify_bytes(key, candidate.payload, candidate.signature, what=where)
        return Signer(key_fingerprint(key), identity, issuer, leaf, signed_at)

    def describe(self) -> str:
        if isinstance(self.signing_time, TransparencyLogs):
            timing = f"signing time from {len(self.signing_time.log_ids)} transparency log(s)"
        else:
            timing = self.signing_time.describe()
        return (
            f"keyless policy (identity `{self.identity_regexp}`, issuer `{self.issuer_regexp}`, "
            f"{len(self._roots)} root(s), {timing})"
        )


@dataclass(frozen=True)
class AnyOf:
    """Trust a signature that any one of ``policies`` trusts."""

    policies: tuple[TrustPolicy, ...]

    def __post_init__(self) -> None:
        if not self.policies:
            raise SigningSetupError("AnyOf needs at least one policy")

    def verify(self, candidate: SignatureCandidate) -> Signer:
        failures: list[VerificationError] = []
        for policy in self.policies:
            try:
                return policy.verify(candidate)
            except VerificationError as e:
                failures.append(e)
        if len(failures) == 1:
            raise failures[0]
        raise VerificationError(
            f"{candidate.position} is trusted by none of {len(failures)} policies: "
            + "; ".join(f"({n}) {e}" for n, e in enumerate(failures, 1))
        )

    def describe(self) -> str:
        return "any of: " + ", ".join(p.describe() for p in self.policies)


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise SigningSetupError(f"the {what} regexp must be a non-empty string")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise SigningSetupError(f"the {what} regexp `{pattern}` does not compile: {e}") from e


def signing_time_from(
    tlog_keys_file: Path | None, insecure_ignore_tlog: bool
) -> SigningTime | None:
    """What proves a keyless signature's time, from the two settings (agent and platform)."""
    if tlog_keys_file is not None and insecure_ignore_tlog:
        raise ConfigError(
            "cosign_tlog_keys_file and cosign_insecure_ignore_tlog = true contradict each "
            "other: keep the log key"
        )
    if tlog_keys_file is not None:
        try:
            return TransparencyLogs(_read_keys(tlog_keys_file))
        except PowernodeError as e:
            raise ConfigError(f"{tlog_keys_file}: {e}") from e
    return UnsafeValidityAtNow() if insecure_ignore_tlog else None


def _read_keys(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the transparency log keys: {e.strerror}") from e
