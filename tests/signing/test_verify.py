"""verify_signatures: round trips, every bad input with its message, cosign interop."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from powernode.errors import VerificationError
from powernode.signing import (
    AnyOf,
    CertificateError,
    IdentityMismatchError,
    KeylessPolicy,
    Layer,
    NoSignaturesError,
    PayloadError,
    PayloadMismatchError,
    PrivateKey,
    PublicKeyPolicy,
    SignatureInvalidError,
    SigningSetupError,
    UnsafeValidityAtNow,
    generate_private_key,
    key_fingerprint,
    public_key_pem,
    sign_manifest_digest,
    signature_manifest,
    verify_signatures,
)
from tests.signing.testca import GITHUB_ISSUER, T0, WORKFLOW, FakeCA, pem
from tests.signing.vectors import CI, ci_digest, ci_layer

REPO = "registry.example.com/acme/modules/nginx"
DIGEST = "sha256:" + "0f" * 32
OTHER = "sha256:" + "1e" * 32
IDENTITY_RE = r"https://github\.com/acme/modules/\.github/workflows/build\.yaml@refs/heads/main"
ISSUER_RE = r"https://token\.actions\.githubusercontent\.com"
AT_NOW = UnsafeValidityAtNow()  # these tests are about certificates at a given time


def layers_for(*sigs: object) -> list[Layer]:
    return signature_manifest(list(sigs))[2]  # type: ignore[arg-type]


def ec_key() -> ec.EllipticCurvePrivateKey:
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def keyless(
    ca: FakeCA, *, at: datetime.datetime = T0, identity: str = IDENTITY_RE
) -> KeylessPolicy:
    return KeylessPolicy(ca.root_pem, identity, ISSUER_RE, at, UnsafeValidityAtNow())


def keyless_layers(ca: FakeCA, key: PrivateKey | None = None, **leaf: object) -> list[Layer]:
    key = key or ec_key()
    cert = pem(ca.leaf(key, **leaf))  # type: ignore[arg-type]
    sig = sign_manifest_digest(REPO, DIGEST, key, certificate_pem=cert, chain_pem=ca.chain_pem)
    return layers_for(sig)


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_public_key_round_trip(kind: str) -> None:
    key = generate_private_key(kind)  # type: ignore[arg-type]
    layers = layers_for(sign_manifest_digest(REPO, DIGEST, key))
    verified = verify_signatures(REPO, DIGEST, layers, PublicKeyPolicy(public_key_pem(key)))
    assert verified.manifest_digest == DIGEST
    assert verified.payload.docker_reference == REPO
    assert verified.signer.key_fingerprint == key_fingerprint(key)
    assert verified.signer.identity is None
    assert verified.index == 0


@pytest.mark.parametrize("issuer_ext", ["v1", "v2"])
@pytest.mark.parametrize("key_kind", ["ecdsa-p256", "ed25519"])
def test_keyless_round_trip(issuer_ext: str, key_kind: str) -> None:
    ca = FakeCA()
    key = generate_private_key(key_kind)  # type: ignore[arg-type]
    layers = keyless_layers(ca, key, issuer_ext=issuer_ext)
    verified = verify_signatures(REPO, DIGEST, layers, keyless(ca))
    assert verified.signer.identity == WORKFLOW
    assert verified.signer.issuer == GITHUB_ISSUER
    assert verified.signer.key_fingerprint == key_fingerprint(key)


def test_keyless_email_identity_and_chain_without_root_copy() -> None:
    ca = FakeCA()
    key = ec_key()
    cert = pem(ca.leaf(key, uri=None, email="dev@acme.example"))
    sig = sign_manifest_digest(
        REPO, DIGEST, key, certificate_pem=cert, chain_pem=pem(ca.intermediate)
    )
    policy = KeylessPolicy(ca.root_pem, r".*@acme\.example", ISSUER_RE, T0, AT_NOW)
    assert (
        verify_signatures(REPO, DIGEST, layers_for(sig), policy).signer.identity
        == "dev@acme.example"
    )


def test_one_valid_signature_among_several_suffices() -> None:
    trusted, stranger = generate_private_key(), generate_private_key("ed25519")
    layers = layers_for(
        sign_manifest_digest(REPO, DIGEST, stranger),
        sign_manifest_digest(REPO, OTHER, trusted),
        sign_manifest_digest(REPO, DIGEST, trusted),
    )
    verified = verify_signatures(REPO, DIGEST, layers, PublicKeyPolicy(public_key_pem(trusted)))
    assert verified.index == 2


def test_any_of_accepts_either_key() -> None:
    old, new = generate_private_key(), generate_private_key("ed25519")
    policy = AnyOf((PublicKeyPolicy(public_key_pem(old)), PublicKeyPolicy(public_key_pem(new))))
    layers = layers_for(sign_manifest_digest(REPO, DIGEST, new))
    assert verify_signatures(
        REPO, DIGEST, layers, policy
    ).signer.key_fingerprint == key_fingerprint(new)
    stranger = layers_for(sign_manifest_digest(REPO, DIGEST, generate_private_key()))
    with pytest.raises(VerificationError, match="trusted by none of 2 policies"):
        verify_signatures(REPO, DIGEST, stranger, policy)


# -- bad inputs ---------------------------------------------------------------------


def test_unsigned_artifact() -> None:
    policy = PublicKeyPolicy(public_key_pem(generate_private_key()))
    with pytest.raises(NoSignaturesError) as e:
        verify_signatures(REPO, DIGEST, [], policy)
    assert str(e.value) == (
        f"{REPO}@{DIGEST} has no signatures (nothing under its .sig tag); "
        "sign it with `powernode module sign` or pull a signed artifact"
    )


def test_signed_by_another_key() -> None:
    signer, trusted = generate_private_key(), generate_private_key()
    layers = layers_for(sign_manifest_digest(REPO, DIGEST, signer))
    with pytest.raises(SignatureInvalidError) as e:
        verify_signatures(REPO, DIGEST, layers, PublicKeyPolicy(public_key_pem(trusted)))
    assert f"signature 1 of 1 does not verify with key {key_fingerprint(trusted)}" in str(e.value)
    assert f"no signature trusted by public key {key_fingerprint(trusted)}" in str(e.value)


def test_signature_for_another_artifact() -> None:
    key = generate_private_key()
    layers = layers_for(sign_manifest_digest(REPO, OTHER, key))
    with pytest.raises(PayloadMismatchError) as e:
        verify_signatures(REPO, DIGEST, layers, PublicKeyPolicy(public_key_pem(key)))
    assert f"signs {OTHER}, not {DIGEST}: the signature belongs to another artifact" in str(e.value)


def test_tampered_payload() -> None:
    key = generate_private_key()
    (layer,) = layers_for(sign_manifest_digest(REPO, OTHER, key))
    forged = Layer(
        layer.media_type, layer.data.replace(OTHER.encode(), DIGEST.encode()), layer.annotations
    )
    with pytest.raises(SignatureInvalidError, match="the payload or signature was altered"):
        verify_signatures(REPO, DIGEST, [forged], PublicKeyPolicy(public_key_pem(key)))


def test_signature_for_another_repository() -> None:
    key = generate_private_key()
    layers = layers_for(sign_manifest_digest("mirror.example/acme/nginx", DIGEST, key))
    policy = PublicKeyPolicy(public_key_pem(key))
    with pytest.raises(
        PayloadMismatchError, match=r"was made for repository 'mirror\.example/acme/nginx'"
    ):
        verify_signatures(REPO, DIGEST, layers, policy)
    assert verify_signatures(REPO, DIGEST, layers, policy, match_reference=False).index == 0


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        pytest.param(
            Layer("application/json", b"{}", {}),
            "has media type 'application/json'",
            id="media-type",
        ),
        pytest.param(
            Layer("application/vnd.dev.cosign.simplesigning.v1+json", b"{}", {}),
            "has no dev.cosignproject.cosign/signature annotation",
            id="no-annotation",
        ),
        pytest.param(
            Layer(
                "application/vnd.dev.cosign.simplesigning.v1+json",
                b"{}",
                {"dev.cosignproject.cosign/signature": "%%%"},
            ),
            "the signature annotation is not base64",
            id="not-base64",
        ),
    ],
)
def test_malformed_layer(layer: Layer, message: str) -> None:
    policy = PublicKeyPolicy(public_key_pem(generate_private_key()))
    with pytest.raises(PayloadError, match=message):
        verify_signatures(REPO, DIGEST, [layer], policy)


def test_garbage_signature_bytes() -> None:
    key = generate_private_key()
    (layer,) = layers_for(sign_manifest_digest(REPO, DIGEST, key))
    notes = {"dev.cosignproject.cosign/signature": base64.b64encode(b"\x30\x02junk").decode()}
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_signatures(
            REPO,
            DIGEST,
            [Layer(layer.media_type, layer.data, notes)],
            PublicKeyPolicy(public_key_pem(key)),
        )


def test_all_failures_are_listed() -> None:
    key = generate_private_key()
    layers = layers_for(
        sign_manifest_digest(REPO, OTHER, key),
        sign_manifest_digest(REPO, DIGEST, generate_private_key()),
    )
    with pytest.raises(VerificationError) as e:
        verify_signatures(REPO, DIGEST, layers, PublicKeyPolicy(public_key_pem(key)))
    assert type(e.value) is VerificationError  # mixed reasons: the common base type
    assert "signature 1 of 2 (by key" in str(e.value)
    assert "signature 2 of 2 does not verify" in str(e.value)


def test_keyless_policy_refuses_key_signature() -> None:
    ca = FakeCA()
    layers = layers_for(sign_manifest_digest(REPO, DIGEST, generate_private_key()))
    with pytest.raises(
        CertificateError, match=r"carries no certificate .* was it signed with a key\?"
    ):
        verify_signatures(REPO, DIGEST, layers, keyless(ca))


def test_expired_certificate() -> None:
    ca = FakeCA()
    layers = keyless_layers(ca)
    later = T0 + datetime.timedelta(hours=1)
    with pytest.raises(CertificateError) as e:
        verify_signatures(REPO, DIGEST, layers, keyless(ca, at=later))
    assert "signing certificate expired at 2026-03-01T12:05:00+00:00" in str(e.value)
    assert f"(checked at {later.isoformat()})" in str(e.value)


def test_certificate_not_yet_valid() -> None:
    ca = FakeCA()
    with pytest.raises(CertificateError, match="is not valid before 2026-03-01T11:55:00"):
        verify_signatures(
            REPO, DIGEST, keyless_layers(ca), keyless(ca, at=T0 - datetime.timedelta(hours=1))
        )


def test_expired_ca() -> None:
    ca = FakeCA(not_after=T0 - datetime.timedelta(days=1))
    with pytest.raises(
        CertificateError, match=r"intermediate certificate CN=root intermediate.* expired at"
    ):
        verify_signatures(REPO, DIGEST, keyless_layers(ca), keyless(ca))


def test_chain_to_unknown_root() -> None:
    signer_ca, trusted_ca = FakeCA(name="rogue"), FakeCA(name="trusted")
    with pytest.raises(CertificateError) as e:
        verify_signatures(REPO, DIGEST, keyless_layers(signer_ca), keyless(trusted_ca))
    message = str(e.value)
    assert "certificate chain leads to an unknown root" in message
    assert "CN=rogue CA,O=powernode test" in message and "CN=trusted CA" in message


def test_chain_missing_intermediate() -> None:
    ca = FakeCA()
    key = ec_key()
    sig = sign_manifest_digest(REPO, DIGEST, key, certificate_pem=pem(ca.leaf(key)))
    with pytest.raises(
        CertificateError,
        match="was issued by CN=root intermediate,O=powernode test, which is neither",
    ):
        verify_signatures(REPO, DIGEST, layers_for(sig), keyless(ca))


def test_identity_does_not_match() -> None:
    ca = FakeCA()
    layers = keyless_layers(
        ca, uri="https://github.com/evil/fork/.github/workflows/build.yaml@refs/heads/main"
    )
    with pytest.raises(IdentityMismatchError) as e:
        verify_signatures(REPO, DIGEST, layers, keyless(ca))
    assert (
        "identity `https://github.com/evil/fork/.github/workflows/build.yaml@refs/heads/main` "
        f"does not match `{IDENTITY_RE}`"
    ) in str(e.value)


def test_identity_regexp_must_match_whole_identity() -> None:
    ca = FakeCA()
    policy = keyless(ca, identity=r"https://github\.com/acme/")
    with pytest.raises(IdentityMismatchError, match="does not match"):
        verify_signatures(REPO, DIGEST, keyless_layers(ca), policy)


def test_issuer_does_not_match() -> None:
    ca = FakeCA()
    layers = keyless_layers(ca, issuer="https://accounts.evil.example")
    with pytest.raises(IdentityMismatchError) as e:
        verify_signatures(REPO, DIGEST, layers, keyless(ca))
    assert f"issuer `https://accounts.evil.example` does not match `{ISSUER_RE}`" in str(e.value)


def test_certificate_without_issuer() -> None:
    ca = FakeCA()
    with pytest.raises(IdentityMismatchError, match="has no OIDC issuer extension"):
        verify_signatures(REPO, DIGEST, keyless_layers(ca, issuer=None), keyless(ca))


def test_certificate_without_code_signing() -> None:
    ca = FakeCA()
    with pytest.raises(
        CertificateError,
        match="has no extended key usage; a signing certificate must allow code signing",
    ):
        verify_signatures(REPO, DIGEST, keyless_layers(ca, code_signing=False), keyless(ca))


def test_keyless_tampered_payload() -> None:
    ca = FakeCA()
    (layer,) = keyless_layers(ca)
    forged = Layer(layer.media_type, layer.data.replace(b"nginx", b"nginy"), layer.annotations)
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_signatures(REPO.replace("nginx", "nginy"), DIGEST, [forged], keyless(ca))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"identity_regexp": "("}, r"the identity regexp `\(` does not compile"),
        ({"issuer_regexp": ""}, "the issuer regexp must be a non-empty string"),
        ({"now": datetime.datetime(2026, 1, 1)}, "must be timezone-aware"),
        ({"roots_pem": b""}, "at least one root certificate"),
    ],
)
def test_keyless_policy_setup_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "roots_pem": FakeCA().root_pem,
        "identity_regexp": ".*",
        "issuer_regexp": ".*",
        "now": T0,
        "signing_time": AT_NOW,
    }
    args.update(kwargs)
    with pytest.raises(SigningSetupError, match=message):
        KeylessPolicy(**args)  # type: ignore[arg-type]


def test_public_key_policy_setup_error() -> None:
    with pytest.raises(SigningSetupError, match="policy public key: not a PEM file"):
        PublicKeyPolicy(b"ssh-ed25519 AAAA")


# -- interop: signatures made by cosign (vectors/README.md) ------------------------

CI_REPOS = {
    "dir-img-cosign-valid": "192.168.64.2:5000/cosign-signed-single-sample",
    "dir-img-cosign-key-rekor-valid": "192.168.64.2:5000/cosign-signed/key-1",
    "dir-img-cosign-fulcio-rekor-valid": "192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
}
FULCIO_ROOT = (CI / "fulcio_v1.crt.pem").read_bytes()
FULCIO_SIGNED = datetime.datetime(2023, 1, 20, 20, 55, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("directory", "pub"),
    [("dir-img-cosign-valid", "cosign.pub"), ("dir-img-cosign-key-rekor-valid", "cosign2.pub")],
)
def test_cosign_key_signature(directory: str, pub: str) -> None:
    policy = PublicKeyPolicy((CI / pub).read_bytes())
    verified = verify_signatures(
        CI_REPOS[directory], ci_digest(directory), [ci_layer(directory)], policy
    )
    assert verified.signer.key_fingerprint == key_fingerprint(policy._key)


def test_cosign_key_signature_wrong_key() -> None:
    policy = PublicKeyPolicy((CI / "cosign2.pub").read_bytes())
    directory = "dir-img-cosign-valid"
    with pytest.raises(SignatureInvalidError, match=r"it was made by another key"):
        verify_signatures(CI_REPOS[directory], ci_digest(directory), [ci_layer(directory)], policy)


def test_cosign_fulcio_signature() -> None:
    directory = "dir-img-cosign-fulcio-rekor-valid"
    policy = KeylessPolicy(
        FULCIO_ROOT, r"mitr@redhat\.com", r"https://github\.com/login/oauth", FULCIO_SIGNED, AT_NOW
    )
    verified = verify_signatures(
        CI_REPOS[directory], ci_digest(directory), [ci_layer(directory)], policy
    )
    assert verified.signer.identity == "mitr@redhat.com"
    assert verified.signer.issuer == "https://github.com/login/oauth"


def test_cosign_fulcio_signature_checked_today_is_expired() -> None:
    directory = "dir-img-cosign-fulcio-rekor-valid"
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    policy = KeylessPolicy(
        FULCIO_ROOT, r"mitr@redhat\.com", r"https://github\.com/login/oauth", now, AT_NOW
    )
    with pytest.raises(
        CertificateError, match=r"signing certificate expired at 2023-01-20T21:01:31\+00:00"
    ):
        verify_signatures(CI_REPOS[directory], ci_digest(directory), [ci_layer(directory)], policy)


def test_cosign_fulcio_signature_other_identity() -> None:
    directory = "dir-img-cosign-fulcio-rekor-valid"
    policy = KeylessPolicy(FULCIO_ROOT, r".*@acme\.example", r".*", FULCIO_SIGNED, AT_NOW)
    with pytest.raises(
        IdentityMismatchError, match=r"identity `mitr@redhat.com` does not match `\.\*@acme"
    ):
        verify_signatures(CI_REPOS[directory], ci_digest(directory), [ci_layer(directory)], policy)


def test_cosign_private_pki_signature_is_refused() -> None:
    directory = "dir-img-cosign-pki-valid"
    roots = (CI / "pki_root_crts.pem").read_bytes()
    at = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    policy = KeylessPolicy(roots, r".*", r".*", at, AT_NOW)
    with pytest.raises(CertificateError, match="has no extended key usage"):
        verify_signatures(
            "localhost:5000/test", ci_digest(directory), [ci_layer(directory)], policy
        )


def test_interop_vectors_are_not_ed25519_only() -> None:
    # Guards the parametrisation above: the cosign vectors exercise ECDSA P-256.
    assert isinstance(
        PublicKeyPolicy((CI / "cosign.pub").read_bytes())._key, ec.EllipticCurvePublicKey
    )
    assert not isinstance(
        PublicKeyPolicy((CI / "cosign.pub").read_bytes())._key, ed25519.Ed25519PublicKey
    )


def test_annotations_of_wrong_type() -> None:
    key = generate_private_key()
    (layer,) = layers_for(sign_manifest_digest(REPO, DIGEST, key))
    bad = (
        layer.media_type,
        layer.data,
        {**layer.annotations, "dev.sigstore.cosign/certificate": 7},
    )
    with pytest.raises(PayloadError, match="annotations must map strings to strings"):
        verify_signatures(REPO, DIGEST, [bad], PublicKeyPolicy(public_key_pem(key)))  # type: ignore[list-item]
