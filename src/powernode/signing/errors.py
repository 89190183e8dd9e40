"""The errors the signing library raises, placed in the project's error tree.

::

    ConfigError
    ├── WrongPassphraseError      the passphrase does not open the key file
    └── SigningSetupError         a key, certificate or policy that cannot be used
    DataError
    ├── KeyFormatError            a key file that is not a key we can read
    └── VerificationError
        ├── PayloadError              a simple-signing payload that is malformed
        ├── NoSignaturesError         nothing to verify
        ├── PayloadMismatchError      a payload signed for another digest/repository
        ├── SignatureInvalidError     bytes that do not verify (tampered or another key)
        ├── CertificateError          an unusable, expired or untrusted certificate
        ├── TimestampError            no proven signing time (missing, unsigned, future, foreign)
        └── IdentityMismatchError     a certificate whose identity/issuer the policy refuses

Every subclass takes one message, so :mod:`powernode.signing.verify` can
re-raise a failure with the signature's position prepended and keep its type.
"""

from __future__ import annotations

from powernode.errors import ConfigError, DataError, VerificationError


class WrongPassphraseError(ConfigError):
    """The passphrase does not decrypt the private key."""


class SigningSetupError(ConfigError):
    """A key, certificate or trust policy given by the operator cannot be used."""


class KeyFormatError(DataError):
    """A key file that is malformed or of a kind powernode does not use."""


class PayloadError(VerificationError):
    """A simple-signing payload that does not follow cosign's format."""


class NoSignaturesError(VerificationError):
    """The artifact carries no signature at all."""


class PayloadMismatchError(VerificationError):
    """A validly signed payload that names another manifest digest or repository."""


class SignatureInvalidError(VerificationError):
    """A signature that does not verify over its payload with the trusted key."""


class CertificateError(VerificationError):
    """A signing certificate that is malformed, expired or not chained to a root."""


class TimestampError(VerificationError):
    """No proven signing time: a missing, unsigned, foreign, future or unrelated timestamp."""


class IdentityMismatchError(VerificationError):
    """A certificate whose identity or issuer does not match the policy."""
