"""Keyless: the certificate is checked at the signing time a transparency log proves.

Regression for issue 13 item 10: Fulcio certificates live 10 minutes and the
verifier checked them at *now*, so every keyless signature was refused ten
minutes after it was made. Here a test CA issues 10-minute certificates and a
fake log (its own key) stamps signatures; the real cosign + Fulcio + Rekor
signature of containers/image's fixtures is checked three years later.
"""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.signing import (
    CertificateError,
    KeylessPolicy,
    Layer,
    SigningSetupError,
    TimestampError,
    TransparencyLogs,
    UnsafeValidityAtNow,
    generate_private_key,
    sign_manifest_digest,
    signature_manifest,
    verify_signatures,
)
from powernode.signing.sign import Signature
from tests.signing.testca import GITHUB_ISSUER, T0, WORKFLOW, FakeCA, pem
from tests.signing.testlog import FakeLog, hashedrekord
from tests.signing.vectors import CI, ci_digest, ci_layer

REPO = "registry.example.com/acme/modules/nginx"
DIGEST = "sha256:" + "0f" * 32
IDENTITY_RE = r"https://github\.com/acme/modules/\.github/workflows/build\.yaml@refs/heads/main"
ISSUER_RE = r"https://token\.actions\.githubusercontent\.com"
MINUTE = datetime.timedelta(minutes=1)
HOUR = datetime.timedelta(hours=1)


def signed(
    ca: FakeCA, log: FakeLog | None, stamped: datetime.datetime = T0 + MINUTE
) -> tuple[Signature, ec.EllipticCurvePrivateKey]:
    """A signature with a 10-minute certificate (T0 .. T0+10min), stamped at ``stamped``."""
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = pem(ca.leaf(key, not_before=T0, not_after=T0 + 10 * MINUTE))
    sig = sign_manifest_digest(REPO, DIGEST, key, certificate_pem=cert, chain_pem=ca.chain_pem)
    if log is not None:
        bundle = log.bundle(sig.payload, sig.signature_b64, cert, stamped)
        sig = Signature(sig.payload, sig.signature_b64, cert, ca.chain_pem, bundle)
    return sig, key


def layers(*sigs: Signature) -> list[Layer]:
    return signature_manifest(list(sigs))[2]


def policy(ca: FakeCA, log: FakeLog, now: datetime.datetime = T0 + HOUR) -> KeylessPolicy:
    return KeylessPolicy(ca.root_pem, IDENTITY_RE, ISSUER_RE, now, TransparencyLogs(log.public_pem))


def test_ten_minute_certificate_verifies_an_hour_later() -> None:
    ca, log = FakeCA(), FakeLog()
    sig, _ = signed(ca, log)
    verified = verify_signatures(REPO, DIGEST, layers(sig), policy(ca, log))
    assert (verified.signer.identity, verified.signer.issuer) == (WORKFLOW, GITHUB_ISSUER)
    assert verified.signer.signed_at is not None
    assert verified.signer.signed_at.time == T0 + MINUTE
    assert verified.signer.signed_at.log_id == log.log_id
    # years later too, and the root and intermediate may have expired since
    ca_short = FakeCA(not_after=T0 + HOUR)
    sig2, _ = signed(ca_short, log)
    later = T0 + 3 * 365 * datetime.timedelta(days=1)
    verify_signatures(REPO, DIGEST, layers(sig2), policy(ca_short, log, later))


def test_checked_at_now_the_same_signature_is_refused() -> None:
    """What main did, now only under the explicitly unsafe name."""
    ca, log = FakeCA(), FakeLog()
    sig, _ = signed(ca, log)
    unsafe = KeylessPolicy(ca.root_pem, IDENTITY_RE, ISSUER_RE, T0 + HOUR, UnsafeValidityAtNow())
    with pytest.raises(CertificateError, match="expired at"):
        verify_signatures(REPO, DIGEST, layers(sig), unsafe)


def test_unstamped_signature_is_refused() -> None:
    ca, log = FakeCA(), FakeLog()
    sig, _ = signed(ca, None)
    with pytest.raises(TimestampError, match="carries no transparency log bundle"):
        verify_signatures(REPO, DIGEST, layers(sig), policy(ca, log, T0 + MINUTE))


@pytest.mark.parametrize(
    ("stamped", "message"),
    [
        (T0 + 11 * MINUTE, "signing certificate expired at"),
        (T0 - MINUTE, "signing certificate is not valid before"),
    ],
    ids=["expired-at-signing", "not-yet-valid-at-signing"],
)
def test_certificate_invalid_at_the_signing_time_is_refused(
    stamped: datetime.datetime, message: str
) -> None:
    ca, log = FakeCA(), FakeLog()
    sig, _ = signed(ca, log, stamped)
    with pytest.raises(CertificateError, match=message) as e:
        verify_signatures(REPO, DIGEST, layers(sig), policy(ca, log))
    assert "at the signing time" in str(e.value)


def test_future_signing_time_is_refused() -> None:
    ca, log = FakeCA(not_after=T0 + 1000 * HOUR), FakeLog()
    sig, _ = signed(ca, log, T0 + 5 * MINUTE)
    now = T0 - HOUR  # the log claims a time an hour past the verifier's clock
    with pytest.raises(TimestampError, match="later than now"):
        verify_signatures(REPO, DIGEST, layers(sig), policy(ca, log, now))
    # within the allowed skew it passes
    skew = KeylessPolicy(
        ca.root_pem,
        IDENTITY_RE,
        ISSUER_RE,
        T0 + 4 * MINUTE,
        TransparencyLogs(log.public_pem, max_future_skew=2 * MINUTE),
    )
    verify_signatures(REPO, DIGEST, layers(sig), skew)


def test_stamp_of_an_unknown_log_is_refused() -> None:
    ca, log, stranger = FakeCA(), FakeLog(), FakeLog()
    sig, _ = signed(ca, stranger)
    with pytest.raises(TimestampError, match="not a configured transparency log"):
        verify_signatures(REPO, DIGEST, layers(sig), policy(ca, log))


def _edit_bundle(sig: Signature, edit: object) -> Signature:
    assert sig.bundle is not None
    doc = json.loads(sig.bundle)
    edit(doc)  # type: ignore[operator]
    return Signature(sig.payload, sig.signature_b64, sig.certificate_pem, sig.chain_pem,
                     json.dumps(doc))  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["Payload"].update(integratedTime=d["Payload"]["integratedTime"] - 60),
         "SignedEntryTimestamp does not verify"),
        (lambda d: d["Payload"].update(logIndex=d["Payload"]["logIndex"] + 1),
         "SignedEntryTimestamp does not verify"),
        (lambda d: d.pop("SignedEntryTimestamp"), "SignedEntryTimestamp is missing"),
        (lambda d: d["Payload"].update(integratedTime="1700000000"), "not an integer"),
        (lambda d: d["Payload"].update(integratedTime=1.5e9), "not an integer"),
        (lambda d: d["Payload"].update(logID="zz"), "not 64 lowercase hex"),
        (lambda d: d.update(Payload=[]), "no Payload object"),
    ],
    ids=["time-moved", "index-moved", "unsigned", "time-text", "time-float", "log-id", "shape"],
)  # fmt: skip
def test_altered_or_unsigned_time_is_refused(edit: object, message: str) -> None:
    ca, log = FakeCA(), FakeLog()
    sig, _ = signed(ca, log)
    with pytest.raises(TimestampError, match=message):
        verify_signatures(REPO, DIGEST, layers(_edit_bundle(sig, edit)), policy(ca, log))


def test_bundle_of_another_signature_is_refused() -> None:
    """A genuine stamp for another entry, replayed beside this signature."""
    ca, log = FakeCA(), FakeLog()
    sig, _ = signed(ca, None)
    other, _ = signed(ca, log)
    assert sig.certificate_pem is not None and other.certificate_pem is not None
    cases = {
        "for other data": hashedrekord(b"other payload", sig.signature_b64, sig.certificate_pem),
        "another signature": hashedrekord(sig.payload, other.signature_b64, sig.certificate_pem),
        "another certificate": hashedrekord(sig.payload, sig.signature_b64, other.certificate_pem),
        "only hashedrekord": b'{"apiVersion":"0.0.1","kind":"intoto","spec":{}}',
    }
    for message, body in cases.items():
        bundle = log.bundle(sig.payload, sig.signature_b64, sig.certificate_pem, T0, body=body)
        forged = Signature(
            sig.payload, sig.signature_b64, sig.certificate_pem, ca.chain_pem, bundle
        )
        with pytest.raises(TimestampError, match=message):
            verify_signatures(REPO, DIGEST, layers(forged), policy(ca, log))


def test_transparency_logs_setup_errors() -> None:
    with pytest.raises(SigningSetupError, match="no PUBLIC KEY PEM block"):
        TransparencyLogs(b"")
    with pytest.raises(SigningSetupError, match="max_future_skew"):
        TransparencyLogs(FakeLog().public_pem, max_future_skew=-MINUTE)
    with pytest.raises(SigningSetupError, match="signing_time must be"):
        KeylessPolicy(FakeCA().root_pem, ".*", ".*", T0, None)  # type: ignore[arg-type]


# -- interop: a real cosign keyless signature with its real Rekor bundle -------------

FULCIO_DIR = "dir-img-cosign-fulcio-rekor-valid"
FULCIO_REPO = "192.168.64.2:5000/cosign-signed/fulcio-rekor-1"
REKOR = TransparencyLogs((CI / "rekor.pub").read_bytes())
FULCIO_ROOT = (CI / "fulcio_v1.crt.pem").read_bytes()
TODAY = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)


def test_cosign_fulcio_rekor_signature_verifies_years_later() -> None:
    """Signed 2023-01-20 with a certificate valid 20:51:31–21:01:31; Rekor says 20:51:33."""
    policy = KeylessPolicy(
        FULCIO_ROOT, r"mitr@redhat\.com", r"https://github\.com/login/oauth", TODAY, REKOR
    )
    verified = verify_signatures(FULCIO_REPO, ci_digest(FULCIO_DIR), [ci_layer(FULCIO_DIR)], policy)
    assert verified.signer.identity == "mitr@redhat.com"
    assert verified.signer.signed_at is not None
    assert verified.signer.signed_at.time == datetime.datetime(
        2023, 1, 20, 20, 51, 33, tzinfo=datetime.UTC
    )
    assert verified.signer.signed_at.log_index == 11605770


def test_cosign_signature_without_its_bundle_is_refused() -> None:
    layer = ci_layer(FULCIO_DIR)
    notes = {k: v for k, v in layer.annotations.items() if k != "dev.sigstore.cosign/bundle"}
    policy = KeylessPolicy(
        FULCIO_ROOT, r"mitr@redhat\.com", r"https://github\.com/login/oauth", TODAY, REKOR
    )
    with pytest.raises(TimestampError, match="no transparency log bundle"):
        verify_signatures(
            FULCIO_REPO, ci_digest(FULCIO_DIR), [Layer(layer.media_type, layer.data, notes)], policy
        )


def test_cosign_bundle_with_a_moved_time_is_refused() -> None:
    layer = ci_layer(FULCIO_DIR)
    doc = json.loads(layer.annotations["dev.sigstore.cosign/bundle"])
    doc["Payload"]["integratedTime"] += 1
    notes = {**layer.annotations, "dev.sigstore.cosign/bundle": json.dumps(doc)}
    policy = KeylessPolicy(
        FULCIO_ROOT, r"mitr@redhat\.com", r"https://github\.com/login/oauth", TODAY, REKOR
    )
    with pytest.raises(TimestampError, match="does not verify"):
        verify_signatures(
            FULCIO_REPO, ci_digest(FULCIO_DIR), [Layer(layer.media_type, layer.data, notes)], policy
        )
    assert base64.b64decode(doc["SignedEntryTimestamp"])  # the SET itself was left alone
